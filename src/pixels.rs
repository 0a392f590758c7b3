//! Parsing the FER2013 `pixels` column: 2,304 space-separated integers 0-255
//! per row. Rows are parsed in parallel with rayon straight into one
//! contiguous (N, 48, 48) uint8 buffer.

use rayon::prelude::*;

use crate::IMAGE_PIXELS;

/// Why one row could not be parsed; `row` is its position (0-based) in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub row: usize,
    pub message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "row {}: {}", self.row, self.message)
    }
}

/// Parses one row into `out` (exactly `IMAGE_PIXELS` bytes).
pub fn parse_row(text: &[u8], out: &mut [u8]) -> Result<(), String> {
    if parse_row_fast(text, out) {
        return Ok(());
    }
    parse_row_checked(text, out)
}

/// The common case, "d d d ..." with single spaces, in one tight pass.
/// Returns false on anything else, which the checked parser then explains.
fn parse_row_fast(text: &[u8], out: &mut [u8]) -> bool {
    let n = text.len();
    let mut i = 0;
    let mut count = 0;
    while i < n {
        let mut digit = text[i].wrapping_sub(b'0');
        if digit >= 10 {
            return false;
        }
        let mut value = digit as u32;
        i += 1;
        while i < n {
            digit = text[i].wrapping_sub(b'0');
            if digit >= 10 {
                break;
            }
            value = value * 10 + digit as u32;
            if value > 255 {
                return false;
            }
            i += 1;
        }
        if count >= out.len() {
            return false;
        }
        out[count] = value as u8;
        count += 1;
        if i < n {
            if text[i] != b' ' {
                return false;
            }
            i += 1;
        }
    }
    count == out.len()
}

fn parse_row_checked(text: &[u8], out: &mut [u8]) -> Result<(), String> {
    debug_assert_eq!(out.len(), IMAGE_PIXELS);
    let mut count = 0usize;
    let mut i = 0usize;
    let n = text.len();
    while i < n {
        while i < n && text[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            break;
        }
        let start = i;
        let mut value: u32 = 0;
        let mut digits_ok = true;
        while i < n && !text[i].is_ascii_whitespace() {
            let b = text[i];
            if b.is_ascii_digit() {
                // Saturate so a long run of digits cannot overflow.
                value = (value * 10 + (b - b'0') as u32).min(1_000_000);
            } else {
                digits_ok = false;
            }
            i += 1;
        }
        let token = &text[start..i];
        if !digits_ok {
            let shown = String::from_utf8_lossy(&token[..token.len().min(20)]);
            let is_negative_int = token.len() > 1
                && token[0] == b'-'
                && token[1..].iter().all(|b| b.is_ascii_digit());
            return Err(if is_negative_int {
                format!("value {shown} (value number {}) is outside 0-255", count + 1)
            } else {
                format!("token {shown:?} (value number {}) is not an integer", count + 1)
            });
        }
        if value > 255 {
            let shown = String::from_utf8_lossy(&token[..token.len().min(20)]);
            return Err(format!("value {shown} (value number {}) is outside 0-255", count + 1));
        }
        if count < IMAGE_PIXELS {
            out[count] = value as u8;
        }
        count += 1;
    }
    if count == 0 {
        return Err(format!("is empty, expected {IMAGE_PIXELS} space-separated integers 0-255"));
    }
    if count != IMAGE_PIXELS {
        return Err(format!("has {count} values, expected {IMAGE_PIXELS} (48x48)"));
    }
    Ok(())
}

/// Parses rows given as separate byte slices. On failure reports the first
/// bad row by position.
pub fn parse_slices(rows: &[&[u8]]) -> Result<Vec<u8>, RowError> {
    let mut out = vec![0u8; rows.len() * IMAGE_PIXELS];
    let first_error = out
        .par_chunks_mut(IMAGE_PIXELS)
        .zip(rows.par_iter())
        .enumerate()
        .filter_map(|(row, (dst, text))| parse_row(text, dst).err().map(|message| RowError { row, message }))
        .min_by_key(|e| e.row);
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Parses rows given as one concatenated byte buffer plus `offsets`
/// (`offsets.len() == rows + 1`, row `i` is `data[offsets[i]..offsets[i+1]]`).
/// On failure reports the first bad row by position.
pub fn parse_concatenated(data: &[u8], offsets: &[usize]) -> Result<Vec<u8>, RowError> {
    let rows = offsets.len().saturating_sub(1);
    let mut out = vec![0u8; rows * IMAGE_PIXELS];
    let first_error = out
        .par_chunks_mut(IMAGE_PIXELS)
        .enumerate()
        .filter_map(|(row, dst)| {
            parse_row(&data[offsets[row]..offsets[row + 1]], dst)
                .err()
                .map(|message| RowError { row, message })
        })
        .min_by_key(|e| e.row);
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Convenience for Rust callers with separate strings.
pub fn parse_rows<S: AsRef<str> + Sync>(rows: &[S]) -> Result<Vec<u8>, RowError> {
    let mut data = Vec::new();
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0);
    for r in rows {
        data.extend_from_slice(r.as_ref().as_bytes());
        offsets.push(data.len());
    }
    parse_concatenated(&data, &offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_of(values: impl Iterator<Item = u32>) -> String {
        values.map(|v| v.to_string()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn parses_valid_rows_in_order() {
        let a = row_of((0..IMAGE_PIXELS as u32).map(|i| i % 256));
        let b = row_of((0..IMAGE_PIXELS as u32).map(|i| 255 - i % 256));
        let out = parse_rows(&[a, b]).unwrap();
        assert_eq!(out.len(), 2 * IMAGE_PIXELS);
        assert_eq!(out[0], 0);
        assert_eq!(out[300], (300 % 256) as u8);
        assert_eq!(out[IMAGE_PIXELS], 255);
        assert_eq!(out[IMAGE_PIXELS + 1], 254);
    }

    #[test]
    fn tolerates_extra_whitespace() {
        let a = format!("  {}  \n", row_of((0..IMAGE_PIXELS as u32).map(|_| 7)).replace(' ', "  "));
        let out = parse_rows(&[a]).unwrap();
        assert!(out.iter().all(|&v| v == 7));
    }

    #[test]
    fn reports_wrong_counts_and_the_first_bad_row() {
        let good = row_of((0..IMAGE_PIXELS as u32).map(|_| 1));
        let short = row_of((0..IMAGE_PIXELS as u32 - 1).map(|_| 1));
        let long = row_of((0..IMAGE_PIXELS as u32 + 1).map(|_| 1));
        let e = parse_rows(&[good.clone(), short, long]).unwrap_err();
        assert_eq!(e.row, 1);
        assert!(e.message.contains("has 2303 values"), "{}", e.message);
        let e = parse_rows(&[good.clone(), good.clone(), row_of((0..2305).map(|_| 0))]).unwrap_err();
        assert_eq!(e.row, 2);
        assert!(e.message.contains("has 2305 values"), "{}", e.message);
    }

    #[test]
    fn reports_bad_tokens_ranges_and_empty_rows() {
        let mut v: Vec<String> = (0..IMAGE_PIXELS).map(|_| "3".to_string()).collect();
        v[10] = "1.5".into();
        let e = parse_rows(&[v.join(" ")]).unwrap_err();
        assert!(e.message.contains("\"1.5\"") && e.message.contains("not an integer"), "{}", e.message);
        v[10] = "256".into();
        let e = parse_rows(&[v.join(" ")]).unwrap_err();
        assert!(e.message.contains("256") && e.message.contains("outside 0-255"), "{}", e.message);
        v[10] = "-1".into();
        let e = parse_rows(&[v.join(" ")]).unwrap_err();
        assert!(e.message.contains("outside 0-255"), "{}", e.message);
        v[10] = "99999999999999999999".into();
        let e = parse_rows(&[v.join(" ")]).unwrap_err();
        assert!(e.message.contains("outside 0-255"), "{}", e.message);
        let e = parse_rows(&["   "]).unwrap_err();
        assert!(e.message.contains("is empty"), "{}", e.message);
    }
}
