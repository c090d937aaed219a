//! Query strings and form bodies: `form_urlencoded` decodes, `percent-encoding`
//! encodes.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986's unreserved characters is escaped, so a value
/// is safe in any part of a URL (a space becomes `%20`, not `+`).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a query-string component.
pub fn url_encode(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

/// Decodes `application/x-www-form-urlencoded` text into pairs. Lenient,
/// as browsers are: bad escapes are kept literally and invalid UTF-8 is
/// replaced, so an odd field reaches the validation that names it.
pub fn parse_form(text: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(text)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The value of `key` (the first one), trimmed; empty when absent.
pub fn param<'a>(params: &'a [(String, String)], key: &str) -> &'a str {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_round_trips() {
        let text = "a b&c=d/é+%";
        let enc = url_encode(text);
        assert_eq!(enc, "a%20b%26c%3Dd%2F%C3%A9%2B%25");
        assert_eq!(
            parse_form(format!("k={enc}").as_bytes()),
            vec![("k".into(), text.into())]
        );
    }

    #[test]
    fn forms_parse() {
        assert_eq!(
            parse_form(b"a=1&b=x+y&&c&d=%E6%94%80&e=%zz&f=%4&g=%+1"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "".into()),
                ("d".into(), "攀".into()),
                ("e".into(), "%zz".into()),
                ("f".into(), "%4".into()),
                ("g".into(), "% 1".into()),
            ]
        );
        // Not UTF-8 at all: replaced, not refused.
        assert_eq!(
            parse_form(b"csrf=\xff\xfe&x"),
            vec![
                ("csrf".into(), "\u{FFFD}\u{FFFD}".into()),
                ("x".into(), "".into())
            ]
        );
    }
}
