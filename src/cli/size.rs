//! Sizes on the command line: `1073741824`, `512K`, `64M`, `1G`, `2T` (powers of 1024; a
//! trailing `B` or `iB` is accepted).

/// Parses a size above zero; the error says what was wrong.
pub fn parse_size(text: &str) -> Result<u64, String> {
    parse_bytes(text).and_then(|size| {
        if size == 0 {
            Err(format!("{text:?}: a size must be above zero"))
        } else {
            Ok(size)
        }
    })
}

/// Parses a count of bytes, zero included; the error says what was wrong.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let unitless = trimmed
        .strip_suffix("iB")
        .or_else(|| trimmed.strip_suffix('B'))
        .unwrap_or(trimmed);
    let digits_end = unitless
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(unitless.len());
    let (digits, unit) = unitless.split_at(digits_end);
    let shift = match unit {
        "" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        _ => return Err(format!("{text:?}: the unit must be K, M, G or T")),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (like 1G, 512M or 4096)"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?}: a size must be below 16 EiB"))
}

#[cfg(test)]
mod tests {
    use super::{parse_bytes, parse_size};

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2TB"), Ok(2 << 40));
        for bad in ["", "G", "1X", "0", "-1", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn byte_counts_take_zero() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("0K"), Ok(0));
        assert_eq!(parse_bytes("16K"), Ok(16 << 10));
        for bad in ["", "K", "4X", "-1", "1.5K", "99999999999T"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
