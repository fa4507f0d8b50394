//! A client byte stream, cut into pieces at arbitrary points, driven through the server's
//! handshake: it must never panic, never consume more than it was given, always make progress,
//! and everything it answers before the end must be well-formed option replies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regio_nbd::proto::{
    BlockSizes, ExportInfo, Handshake, OptionReply, OptionReplyHeader, Step, TransmissionFlags,
    OPTION_REPLY_HEADER_LEN,
};

fn catalogue() -> Vec<ExportInfo> {
    let export = |name: &str, block_sizes| ExportInfo {
        name: name.into(),
        description: format!("the {name} export"),
        size: 1 << 30,
        flags: TransmissionFlags::SEND_FLUSH | TransmissionFlags::SEND_DF,
        block_sizes,
    };
    vec![
        export("disk", BlockSizes::DEFAULT),
        export(
            "aligned",
            BlockSizes::new(4096, 4096, 1 << 20).expect("valid sizes"),
        ),
    ]
}

/// Checks that `bytes` is a sequence of whole, decodable option replies.
fn assert_option_replies(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let header = OptionReplyHeader::decode(bytes.first_chunk().expect("a whole header"))
            .expect("a reply header");
        let end = OPTION_REPLY_HEADER_LEN + header.length as usize;
        OptionReply::decode(header.reply_type, &bytes[OPTION_REPLY_HEADER_LEN..end])
            .expect("a well-formed reply");
        bytes = &bytes[end..];
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut % 32) + 1;
    let exports = catalogue();
    let mut out = Vec::new();
    let mut handshake = Handshake::start(&mut out);
    out.clear();
    let mut buffer = Vec::new();
    for piece in input.chunks(cut) {
        buffer.extend_from_slice(piece);
        loop {
            let before = out.len();
            match handshake.advance(&buffer, exports.as_slice(), &mut out) {
                Ok(Step::Continue { consumed }) => {
                    assert!(consumed > 0 && consumed <= buffer.len());
                    buffer.drain(..consumed);
                    assert_option_replies(&out[before..]);
                }
                Ok(Step::Incomplete { missing }) => {
                    assert!(missing > 0);
                    assert_eq!(out.len(), before, "no reply without consuming");
                    break;
                }
                Ok(Step::Transmission { consumed, .. } | Step::Abort { consumed }) => {
                    assert!(consumed <= buffer.len());
                    return;
                }
                Err(error) => {
                    assert!(error.must_close());
                    return;
                }
            }
        }
    }
});
