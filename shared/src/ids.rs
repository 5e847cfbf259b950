//! Validated names. Everything that ends up in a file path (an id from a CSV row,
//! a source name from the configuration, a path from a Kafka message) goes
//! through one of these types, so nothing can escape the storage root.

use std::fmt;

use crate::error::IdError;

/// The longest id accepted, in bytes. Real ids are short; a longer one is a
/// broken row, and file systems limit a name to 255 bytes anyway.
pub const MAX_ID_LEN: usize = 128;

fn check_name(what: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            what,
            len: value.len(),
            max: MAX_ID_LEN,
        });
    }
    if let Some(ch) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(IdError::BadChar {
            what,
            value: value.chars().take(MAX_ID_LEN).collect(),
            ch,
        });
    }
    if value.starts_with('.') {
        return Err(IdError::LeadingDot {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, IdError> {
                check_name($what, value)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// The id of one image pair (the first CSV column). A file name, so: 1 to 128
    /// bytes of `A-Z a-z 0-9 - _ .`, not starting with a dot.
    ImageId,
    "id"
);

name_type!(
    /// The name of a source (`super_heros`, `alter_egos`): the folder its files go to.
    SourceName,
    "source name"
);

/// The folder merged images are written to. Not a valid source name collision:
/// configuration refuses a source called `concat`.
pub const CONCAT_FOLDER: &str = "concat";

/// A path relative to the storage root: `<folder>/<id>.<ext>`. Only built from
/// validated parts, or parsed back with the same rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoragePath(String);

impl StoragePath {
    /// `<folder>/<id>.<ext>`; `ext` is one of our own image extensions.
    pub fn new(folder: &str, id: &ImageId, ext: &str) -> Result<Self, IdError> {
        check_name("folder", folder)?;
        check_name("extension", ext)?;
        Ok(Self(format!("{folder}/{id}.{ext}")))
    }

    /// Parses a path received in a message; refuses anything but two validated
    /// components (so no `..`, no absolute path, no NUL).
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let (folder, name) = value
            .split_once('/')
            .ok_or_else(|| IdError::BadPath(value.to_owned()))?;
        check_name("folder", folder).map_err(|_| IdError::BadPath(value.to_owned()))?;
        check_name("file name", name).map_err(|_| IdError::BadPath(value.to_owned()))?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The extension, without the dot (`jpg`), if any.
    pub fn extension(&self) -> Option<&str> {
        self.0
            .rsplit_once('/')
            .and_then(|(_, name)| name.rsplit_once('.'))
            .map(|(_, ext)| ext)
    }
}

impl fmt::Display for StoragePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_ids_pass() {
        for id in ["1", "42", "abc-DEF_9", "a.b", &"9".repeat(MAX_ID_LEN)] {
            assert_eq!(ImageId::parse(id).map(|i| i.to_string()), Ok(id.to_owned()));
        }
    }

    #[test]
    fn ids_that_could_escape_or_break_a_file_name_are_refused() {
        let cases: &[(&str, &str)] = &[
            ("", "id is empty"),
            ("..", "may not start with '.'"),
            (".hidden", "may not start with '.'"),
            ("a/b", "the character '/'"),
            ("../etc/passwd", "the character '/'"),
            ("a\0b", "the character '\\0'"),
            ("a b", "the character ' '"),
            ("a\\b", "the character '\\\\'"),
            ("é", "the character 'é'"),
        ];
        for (id, expected) in cases {
            let err = ImageId::parse(id).expect_err(id).to_string();
            assert!(err.contains(expected), "{id:?}: {err}");
        }
        let long = "7".repeat(MAX_ID_LEN + 1);
        assert_eq!(
            ImageId::parse(&long).unwrap_err().to_string(),
            format!(
                "id is {} bytes long, the limit is {MAX_ID_LEN}",
                MAX_ID_LEN + 1
            )
        );
    }

    #[test]
    fn storage_paths_are_built_and_parsed_with_the_same_rules() {
        let id = ImageId::parse("42").unwrap();
        let path = StoragePath::new("super_heros", &id, "jpg").unwrap();
        assert_eq!(path.as_str(), "super_heros/42.jpg");
        assert_eq!(path.extension(), Some("jpg"));
        assert_eq!(StoragePath::parse("super_heros/42.jpg").unwrap(), path);
        for bad in [
            "/etc/passwd",
            "a/../b",
            "../a/b",
            "a/b/c",
            "a",
            "a/.b",
            "a/",
        ] {
            assert!(StoragePath::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
