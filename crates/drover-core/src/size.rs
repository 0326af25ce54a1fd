//! Sizes in bytes as people write them, one way everywhere (config, the
//! CLI, the planner): `16MiB`, `1GB`, `128G`, `1.5T`. Bare `K`, `M`, `G`
//! and `T` are binary, as Linux tools and Docker read them; `KB`..`TB` are
//! decimal; `KiB`..`TiB` binary.

/// Parses a size; the error says what was wrong.
pub fn parse(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || format!("{text:?} is not a size like 16777216, \"16MiB\", \"1GB\" or \"128G\"");
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => return Err(bad()),
    };
    let bytes = number.parse::<f64>().map_err(|_| bad())? * scale;
    if !bytes.is_finite() || !(0.0..=1e18).contains(&bytes) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// Bytes in binary gigabytes, written as the CLI takes them (`116G`):
/// whole when whole, else to one decimal.
pub fn gigabytes(bytes: u64) -> String {
    let g = bytes as f64 / (1u64 << 30) as f64;
    // Below a gigabyte in megabytes, and below that in kilobytes: a small
    // model is not "0G".
    if bytes == 0 {
        return "0".into();
    }
    if g < 0.95 {
        let m = bytes as f64 / (1u64 << 20) as f64;
        return if m >= 1.0 {
            format!("{m:.0}M")
        } else {
            format!("{}K", bytes.div_ceil(1 << 10))
        };
    }
    if (g - g.round()).abs() < 0.05 {
        format!("{g:.0}G")
    } else {
        format!("{g:.1}G")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shown_in_the_unit_that_says_something() {
        assert_eq!(gigabytes(0), "0");
        assert_eq!(gigabytes(512), "1K");
        assert_eq!(gigabytes(300 << 20), "300M");
        assert_eq!(gigabytes(24 << 30), "24G");
        assert_eq!(gigabytes((9 << 30) / 2), "4.5G");
    }

    #[test]
    fn units_are_read_one_way() {
        assert_eq!(parse("16MiB"), Ok(16 << 20));
        assert_eq!(parse("16M"), Ok(16 << 20));
        assert_eq!(parse("1GB"), Ok(1_000_000_000));
        assert_eq!(parse("128G"), Ok(128 << 30));
        assert_eq!(parse("1.5T"), Ok(3 << 39));
        assert_eq!(parse(" 4096 "), Ok(4096));
        assert!(parse("12 parsecs").is_err());
        assert!(parse("1e400").is_err());
        assert!(parse("-1G").is_err());
        assert_eq!(gigabytes(116 << 30), "116G");
        assert_eq!(gigabytes(3 << 29), "1.5G");
    }
}
