//! A request header, then what the handshake negotiated, from arbitrary bytes: decoding,
//! re-encoding and validation must never panic, and what validation accepts must fit the export.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regio_nbd::proto::{
    BlockSizes, Command, ExportInfo, Negotiated, RefusedPayload, Request, TransmissionFlags,
    REQUEST_HEADER_LEN,
};

/// Reads fixed-size fields from the fuzzer's bytes, zeroes past the end.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let len = N.min(self.0.len());
        out[..len].copy_from_slice(&self.0[..len]);
        self.0 = &self.0[len..];
        out
    }
}

fn negotiated(bytes: &[u8]) -> Negotiated {
    let mut fields = Fields(bytes);
    let size = u64::from_be_bytes(fields.take());
    let flags = TransmissionFlags::from_bits_retain(u16::from_be_bytes(fields.take()));
    let [minimum, preferred, switches] = fields.take();
    let maximum = u32::from_be_bytes(fields.take());
    let minimum = 1 << (minimum % 17);
    let preferred = (1 << (9 + preferred % 12)).max(minimum);
    let block_sizes = BlockSizes::new(minimum, preferred, maximum.max(preferred))
        .expect("the sizes are built to the spec's rules");
    Negotiated {
        export: ExportInfo {
            name: "disk".into(),
            description: String::new(),
            size,
            flags,
            block_sizes,
        },
        structured_replies: switches & 1 != 0,
        base_allocation: (switches & 2 != 0).then_some(1),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((header, rest)) = data.split_first_chunk::<REQUEST_HEADER_LEN>() else {
        return;
    };
    let Ok(request) = Request::decode(header) else {
        return;
    };
    let mut again = [0; REQUEST_HEADER_LEN];
    request.encode(&mut again);
    assert_eq!(&again, header, "a request must re-encode to its own bytes");

    let negotiated = negotiated(rest);
    let export = &negotiated.export;
    match request.validate(&negotiated) {
        // `NBD_CMD_DISC` passes whatever it carries: it gets no reply, the server just closes.
        Ok(()) if request.command == Command::Disc => {}
        Ok(()) => {
            assert!(!matches!(request.command, Command::Unknown(_)));
            assert!(request.flags.unknown().is_empty());
            if request.command != Command::Flush {
                let end = request.offset.checked_add(u64::from(request.length));
                assert!(
                    end.is_some_and(|end| end <= export.size),
                    "accepted past the end"
                );
                let minimum = u64::from(export.block_sizes.minimum());
                assert_eq!(request.offset % minimum, 0, "accepted an unaligned offset");
            }
            if matches!(request.command, Command::Read | Command::Write) {
                assert!(request.length <= export.block_sizes.maximum());
            }
        }
        Err(refusal) => {
            let no_payload = refusal.payload == RefusedPayload::None;
            assert_eq!(no_payload, request.payload_len() == 0);
        }
    }
});
