//! What a lock key may be, and the characters an escaped key value keeps.

/// The longest accepted lock key, in bytes (the runtime rejects longer keys;
/// the attribute rejects longer templates at compile time).
pub const MAX_KEY_LEN: usize = 1024;

/// The unreserved characters of RFC 3986 (section 2.3) besides letters and
/// digits.
const UNRESERVED_MARKS: [u8; 4] = *b"-._~";

/// Whether `byte` is one of RFC 3986's unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`).
///
/// A value interpolated into a key template (`"orders/<id>"`) keeps these
/// bytes as they are and has every other byte written `%XX` (`%` included),
/// so it can never add a `/` or any other reserved character to the key.
///
/// Two placeholders in a key template must be separated by a character for
/// which this is false (such as `/` or `:`), so that a whole key determines
/// every value in it.
///
/// ```
/// use distlock::is_unreserved;
///
/// assert!(is_unreserved(b'a') && is_unreserved(b'7') && is_unreserved(b'~'));
/// assert!(!is_unreserved(b'/') && !is_unreserved(b'%') && !is_unreserved(0xC3));
/// ```
pub const fn is_unreserved(byte: u8) -> bool {
    if byte.is_ascii_alphanumeric() {
        return true;
    }
    let mut i = 0;
    while i < UNRESERVED_MARKS.len() {
        if UNRESERVED_MARKS[i] == byte {
            return true;
        }
        i += 1;
    }
    false
}

/// [`is_unreserved`] for a `char` (false for every non-ASCII character).
///
/// ```
/// use distlock::is_unreserved_char;
///
/// assert!(is_unreserved_char('-'));
/// assert!(!is_unreserved_char('é') && !is_unreserved_char(':'));
/// ```
pub const fn is_unreserved_char(c: char) -> bool {
    // An ASCII char is one byte: the cast cannot truncate.
    c.is_ascii() && is_unreserved(c as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3986, section 2.3, spelled out.
    const RFC_3986_UNRESERVED: &str =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";

    #[test]
    fn unreserved_is_exactly_the_rfc_set() {
        for byte in 0..=u8::MAX {
            assert_eq!(
                is_unreserved(byte),
                RFC_3986_UNRESERVED.as_bytes().contains(&byte),
                "byte {byte:#04x}"
            );
        }
    }

    #[test]
    fn chars_agree_with_bytes() {
        for c in (0..=0x7f_u8).map(char::from) {
            assert_eq!(
                is_unreserved_char(c),
                RFC_3986_UNRESERVED.contains(c),
                "{c:?}"
            );
        }
        for c in ['é', '\u{a0}', 'ß', '日', '\u{10ffff}'] {
            assert!(!is_unreserved_char(c), "{c:?}");
        }
    }
}
