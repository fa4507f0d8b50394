//! Options from arbitrary bytes, as a whole option (header and data) and as the data of each
//! option code: decoding must never panic, every error must say how the server answers it, and
//! what decodes must encode back to an option that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regio_nbd::proto::{ClientOption, Decoded, OptionHeader, OPTION_HEADER_LEN};

fn check(option: u32, data: &[u8]) {
    match ClientOption::decode(option, data) {
        Ok(decoded) => {
            let mut bytes = Vec::new();
            decoded.encode(&mut bytes);
            let header = OptionHeader::decode(bytes.first_chunk().expect("a whole header"))
                .expect("an encoded option has a valid header");
            assert_eq!(header.option, option);
            assert_eq!(header.length as usize, bytes.len() - OPTION_HEADER_LEN);
            let again = ClientOption::decode(option, &bytes[OPTION_HEADER_LEN..]);
            assert_eq!(
                again.as_ref(),
                Ok(&decoded),
                "an option must survive a round trip"
            );
        }
        Err(error) => assert!(error.must_close() || error.reply_code().is_some()),
    }
}

fuzz_target!(|data: &[u8]| {
    match OptionHeader::parse(data) {
        Ok(Decoded::Complete { item, consumed }) => {
            if let Some(payload) = data[consumed..].get(..item.length as usize) {
                check(item.option, payload);
            }
        }
        Ok(Decoded::Incomplete { missing }) => assert_eq!(missing + data.len(), OPTION_HEADER_LEN),
        Err(error) => assert!(error.must_close() || error.reply_code().is_some()),
    }
    if let Some((&code, payload)) = data.split_first() {
        check(u32::from(code % 16), payload);
    }
});
