//! A value that must never be printed: a password, a private key.

use std::fmt;

/// Holds a secret (a `String` password, `Vec<u8>` key material): its `Debug`
/// and `Display` show `<redacted>`, never the content. Read it with
/// [`Secret::expose`] only where it is handed to the wire or a TLS library.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps `value`.
    pub(crate) fn new(value: T) -> Self {
        Secret(value)
    }

    /// The secret itself.
    pub(crate) fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_the_content() {
        let password = Secret::new(String::from("hunter2"));
        let key = Secret::from(b"-----BEGIN PRIVATE KEY-----".to_vec());
        for shown in [
            format!("{password:?} {password} {key:?} {key}"),
            format!("{:?}", Some(&password)),
            format!("{password:#?}"),
        ] {
            assert!(
                !shown.contains("hunter2") && !shown.contains("PRIVATE"),
                "{shown}"
            );
            assert!(shown.contains("<redacted>"), "{shown}");
        }
        assert_eq!(password.expose(), "hunter2");
        assert_eq!(key.clone().expose().len(), 27);
    }
}
