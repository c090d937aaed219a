//! Named placeholders in configured queries (`:id_number`, `:credit_code`,
//! `:name`, `:legal_representative_id_number`, `:today`), rewritten to the
//! backend's binds: numbered on SQLite and PostgreSQL, one positional `?`
//! per occurrence on MySQL/MariaDB.
//!
//! The scanner skips string literals, quoted identifiers, comments and
//! PostgreSQL `::type` casts, so only real placeholders are rewritten; on
//! MySQL it also knows backslash escapes in literals, backquoted
//! identifiers and `#` comments.

use std::fmt;

/// A value the runtime binds into a configured query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placeholder {
    /// The subject's identity number (normalised, upper-case check char);
    /// NULL when the subject is an organisation.
    IdNumber,
    /// The subject's unified social credit code; NULL when the subject is a
    /// person.
    CreditCode,
    /// The identity number of the case's legal representative, for evidence
    /// that compares against it (`market.registration`); NULL when the case
    /// names none.
    LegalRepresentativeIdNumber,
    /// The name as presented by the applicant, or NULL when none was given.
    Name,
    /// Today's date in China (UTC+8), bound as a date ("YYYY-MM-DD" text on SQLite).
    Today,
}

impl Placeholder {
    pub const ALL: [Self; 5] = [
        Self::IdNumber,
        Self::CreditCode,
        Self::Name,
        Self::LegalRepresentativeIdNumber,
        Self::Today,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::IdNumber => "id_number",
            Self::CreditCode => "credit_code",
            Self::LegalRepresentativeIdNumber => "legal_representative_id_number",
            Self::Name => "name",
            Self::Today => "today",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ":{}", self.name())
    }
}

/// Which numbered-bind syntax to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `?1`, `?2`, … (a repeated placeholder reuses its number).
    Sqlite,
    /// `$1`, `$2`, …
    Postgres,
    /// `?` per occurrence (MySQL and MariaDB have no numbered binds, so a
    /// repeated placeholder is bound once per use).
    Mysql,
}

/// A query rewritten for one backend, with the order in which to bind values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundSql {
    pub sql: String,
    /// `binds[i]` is the value for bind number `i + 1` (on MySQL, for the
    /// `i + 1`-th `?`).
    pub binds: Vec<Placeholder>,
}

/// Why a configured query cannot be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    #[error(
        "unknown placeholder :{0} (known: :id_number, :credit_code, :name, :legal_representative_id_number, :today)"
    )]
    UnknownPlaceholder(String),
    #[error(
        "positional parameter {0:?} is not allowed; use :id_number, :credit_code, :name, :legal_representative_id_number or :today"
    )]
    PositionalParameter(String),
    #[error("unterminated {0}")]
    Unterminated(&'static str),
}

/// Rewrites named placeholders to `dialect`'s numbered binds.
pub fn rewrite(sql: &str, dialect: Dialect) -> Result<BoundSql, SqlError> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len());
    let mut binds: Vec<Placeholder> = Vec::new();
    let mysql = dialect == Dialect::Mysql;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' | '`' if c != '`' || mysql => {
                // MySQL's default SQL mode reads `\'` inside a literal as a
                // quote, not its end.
                let backslash = mysql && c != '`';
                let end = find_quote_end(&chars, i, c, backslash).ok_or(SqlError::Unterminated(
                    if c == '\'' {
                        "string literal"
                    } else {
                        "quoted identifier"
                    },
                ))?;
                out.extend(&chars[i..=end]);
                i = end + 1;
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                i = skip_line_comment(&chars, i, &mut out);
            }
            '#' if mysql => {
                i = skip_line_comment(&chars, i, &mut out);
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                let end = (i + 2..chars.len().saturating_sub(1))
                    .find(|&j| chars[j] == '*' && chars[j + 1] == '/')
                    .ok_or(SqlError::Unterminated("block comment"))?;
                out.extend(&chars[i..end + 2]);
                i = end + 2;
            }
            ':' if chars.get(i + 1) == Some(&':') => {
                out.push_str("::");
                i += 2;
            }
            ':' if chars.get(i + 1).is_some_and(|c| is_ident_start(*c)) => {
                let start = i + 1;
                let end = (start..chars.len())
                    .find(|&j| !is_ident_char(chars[j]))
                    .unwrap_or(chars.len());
                let name: String = chars[start..end].iter().collect();
                let p = Placeholder::from_name(&name).ok_or(SqlError::UnknownPlaceholder(name))?;
                if mysql {
                    binds.push(p);
                    out.push('?');
                } else {
                    let n = match binds.iter().position(|&b| b == p) {
                        Some(k) => k + 1,
                        None => {
                            binds.push(p);
                            binds.len()
                        }
                    };
                    out.push(if dialect == Dialect::Sqlite { '?' } else { '$' });
                    out.push_str(&n.to_string());
                }
                i = end;
            }
            '?' => return Err(SqlError::PositionalParameter("?".to_owned())),
            '$' if chars.get(i + 1).is_some_and(char::is_ascii_digit) => {
                let end = (i + 1..chars.len())
                    .find(|&j| !chars[j].is_ascii_digit())
                    .unwrap_or(chars.len());
                return Err(SqlError::PositionalParameter(
                    chars[i..end].iter().collect(),
                ));
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(BoundSql { sql: out, binds })
}

/// Copies a `--` (or MySQL `#`) comment up to its end of line; returns
/// where scanning resumes.
fn skip_line_comment(chars: &[char], start: usize, out: &mut String) -> usize {
    let end = chars[start..]
        .iter()
        .position(|&c| c == '\n')
        .map_or(chars.len(), |p| start + p);
    out.extend(&chars[start..end]);
    end
}

/// Index of the closing quote; a doubled quote is an escaped one, and so,
/// with `backslash`, is one after a backslash.
fn find_quote_end(chars: &[char], open: usize, quote: char, backslash: bool) -> Option<usize> {
    let mut j = open + 1;
    while j < chars.len() {
        if backslash && chars[j] == '\\' {
            j += 2;
            continue;
        }
        if chars[j] == quote {
            if chars.get(j + 1) == Some(&quote) {
                j += 2;
                continue;
            }
            return Some(j);
        }
        j += 1;
    }
    None
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_and_reuses_numbers() {
        let sql = "SELECT a FROM t WHERE id = :id_number AND d <= :today AND (:name IS NULL OR n = :name) AND e > :today";
        let s = rewrite(sql, Dialect::Sqlite).unwrap();
        assert_eq!(
            s.sql,
            "SELECT a FROM t WHERE id = ?1 AND d <= ?2 AND (?3 IS NULL OR n = ?3) AND e > ?2"
        );
        assert_eq!(
            s.binds,
            [Placeholder::IdNumber, Placeholder::Today, Placeholder::Name]
        );
        let p = rewrite(sql, Dialect::Postgres).unwrap();
        assert!(
            p.sql
                .contains("id = $1 AND d <= $2 AND ($3 IS NULL OR n = $3)")
        );
    }

    #[test]
    fn leaves_literals_comments_and_casts_alone() {
        let sql = "SELECT ':name', \"x:today\", 'it''s :today' -- :bogus\n, :today::date /* :nope */ FROM t WHERE id = :id_number";
        let s = rewrite(sql, Dialect::Postgres).unwrap();
        assert_eq!(
            s.sql,
            "SELECT ':name', \"x:today\", 'it''s :today' -- :bogus\n, $1::date /* :nope */ FROM t WHERE id = $2"
        );
        assert_eq!(s.binds, [Placeholder::Today, Placeholder::IdNumber]);
    }

    #[test]
    fn mysql_binds_every_occurrence_in_order() {
        let sql = "SELECT a FROM t WHERE id = :id_number AND d <= :today AND (:name IS NULL OR n = :name) AND e > :today";
        let m = rewrite(sql, Dialect::Mysql).unwrap();
        assert_eq!(
            m.sql,
            "SELECT a FROM t WHERE id = ? AND d <= ? AND (? IS NULL OR n = ?) AND e > ?"
        );
        assert_eq!(
            m.binds,
            [
                Placeholder::IdNumber,
                Placeholder::Today,
                Placeholder::Name,
                Placeholder::Name,
                Placeholder::Today
            ]
        );
    }

    #[test]
    fn mysql_literals_backquotes_and_hash_comments_are_not_placeholders() {
        // A backslash-escaped quote does not end a MySQL literal, so the
        // `:name` after it is still text; so are backquoted identifiers and
        // `#` comments.
        let sql = "SELECT 'it\\'s :name' AS `x:today`, CONCAT(a, ':today') # :bogus\n FROM t WHERE id = :id_number -- :nope";
        let m = rewrite(sql, Dialect::Mysql).unwrap();
        assert_eq!(
            m.sql,
            "SELECT 'it\\'s :name' AS `x:today`, CONCAT(a, ':today') # :bogus\n FROM t WHERE id = ? -- :nope"
        );
        assert_eq!(m.binds, [Placeholder::IdNumber]);
        assert!(matches!(
            rewrite("SELECT 1 WHERE a = ?", Dialect::Mysql),
            Err(SqlError::PositionalParameter(_))
        ));
        assert_eq!(
            rewrite("SELECT `x FROM t", Dialect::Mysql),
            Err(SqlError::Unterminated("quoted identifier"))
        );
        assert_eq!(
            rewrite("SELECT 'a\\'", Dialect::Mysql),
            Err(SqlError::Unterminated("string literal"))
        );
        // Elsewhere a backslash is an ordinary character and `#` is no comment.
        assert_eq!(
            rewrite("SELECT 'a\\' WHERE id = :id_number", Dialect::Postgres)
                .unwrap()
                .binds,
            [Placeholder::IdNumber]
        );
        assert_eq!(
            rewrite("SELECT a # :today", Dialect::Sqlite).unwrap().sql,
            "SELECT a # ?1"
        );
    }

    #[test]
    fn non_ascii_text_survives() {
        let s = rewrite("SELECT '米易县' AS d WHERE x = :id_number", Dialect::Sqlite).unwrap();
        assert_eq!(s.sql, "SELECT '米易县' AS d WHERE x = ?1");
    }

    #[test]
    fn rejects_unknown_and_positional() {
        assert_eq!(
            rewrite("SELECT 1 WHERE a = :birth", Dialect::Sqlite),
            Err(SqlError::UnknownPlaceholder("birth".to_owned()))
        );
        assert!(matches!(
            rewrite("SELECT 1 WHERE a = ?", Dialect::Sqlite),
            Err(SqlError::PositionalParameter(_))
        ));
        assert_eq!(
            rewrite("SELECT 1 WHERE a = $12", Dialect::Postgres),
            Err(SqlError::PositionalParameter("$12".to_owned()))
        );
        assert_eq!(
            rewrite("SELECT 'oops", Dialect::Sqlite),
            Err(SqlError::Unterminated("string literal"))
        );
        assert_eq!(
            rewrite("SELECT 1 /* x", Dialect::Sqlite),
            Err(SqlError::Unterminated("block comment"))
        );
    }
}
