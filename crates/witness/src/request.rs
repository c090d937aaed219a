//! The `add-checkpoint` request body and the checkpoint head, parsed
//! strictly (C2SP tlog-witness, tlog-checkpoint).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tongban_audit::Hash;

use crate::witness::WitnessError;

/// Largest request accepted. A request is an `old` line, at most 63 proof
/// lines of 45 bytes and a checkpoint with a few signatures: a few KiB.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The spec's bound on consistency proof lines (a proof within a tree of
/// 2^63 leaves).
pub const MAX_PROOF_LINES: usize = 63;

/// A parsed `add-checkpoint` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint<'a> {
    /// The size of the checkpoint the proof starts from.
    pub old: u64,
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, unverified.
    pub note: &'a str,
}

fn malformed(m: impl Into<String>) -> WitnessError {
    WitnessError::Malformed(m.into())
}

/// A decimal with no leading zero (except `0` itself), as the specs require.
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

fn parse_hash(s: &str) -> Option<Hash> {
    B64.decode(s).ok()?.try_into().ok()
}

impl<'a> AddCheckpoint<'a> {
    /// `old <size>\n`, zero to 63 base64 hash lines, an empty line, then
    /// the signed checkpoint.
    pub fn parse(text: &'a str) -> Result<Self, WitnessError> {
        if text.len() > MAX_REQUEST_BYTES {
            return Err(WitnessError::TooLarge);
        }
        // The checkpoint's own origin line is never empty, so the first
        // blank line ends the proof.
        let (head, note) = text
            .split_once("\n\n")
            .ok_or_else(|| malformed("no empty line before the checkpoint"))?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .and_then(parse_decimal)
            .ok_or_else(|| malformed("the first line must be \"old <size>\""))?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == MAX_PROOF_LINES {
                return Err(malformed("more than 63 consistency proof lines"));
            }
            proof.push(
                parse_hash(line)
                    .ok_or_else(|| malformed("a proof line is not a base64 32-byte hash"))?,
            );
        }
        if !note.ends_with('\n') {
            return Err(malformed("the checkpoint must end in a newline"));
        }
        Ok(Self { old, proof, note })
    }

    /// The request text for `note` with a proof from `old`.
    pub fn encode(old: u64, proof: &[Hash], note: &str) -> String {
        let mut s = format!("old {old}\n");
        for h in proof {
            s.push_str(&B64.encode(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(note);
        s
    }
}

/// The first three lines of a checkpoint body; extension lines (`time`,
/// and later `map`, `vrf`, `pruned`) are not interpreted but are part of
/// what is cosigned and compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointHead {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl CheckpointHead {
    pub fn parse(body: &str) -> Result<Self, WitnessError> {
        let mut lines = body.lines();
        let origin = lines
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| malformed("checkpoint has no origin"))?;
        let size = lines
            .next()
            .and_then(parse_decimal)
            .ok_or_else(|| malformed("checkpoint tree size is not a decimal"))?;
        let root = lines
            .next()
            .and_then(parse_hash)
            .ok_or_else(|| malformed("checkpoint root is not a base64 32-byte hash"))?;
        Ok(Self {
            origin: origin.to_string(),
            size,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> String {
        B64.encode([b; 32])
    }

    #[test]
    fn parses_and_encodes() {
        let note = format!("o\n5\n{}\n\n\u{2014} o AAAA\n", h(1));
        let text = AddCheckpoint::encode(3, &[[2; 32], [3; 32]], &note);
        let r = AddCheckpoint::parse(&text).unwrap();
        assert_eq!(r.old, 3);
        assert_eq!(r.proof, vec![[2; 32], [3; 32]]);
        assert_eq!(r.note, note);
        let text = AddCheckpoint::encode(0, &[], &note);
        let r = AddCheckpoint::parse(&text).unwrap();
        assert_eq!((r.old, r.proof.len()), (0, 0));
    }

    #[test]
    fn refuses_malformed() {
        let note = format!("o\n5\n{}\n\n\u{2014} o AAAA\n", h(1));
        let p = h(2);
        for bad in [
            format!("old 01\n\n{note}"),
            format!("old -1\n\n{note}"),
            format!("old 1 \n\n{note}"),
            format!("Old 1\n\n{note}"),
            format!("old 1\n{p}x\n\n{note}"),
            format!("old 1\n{}\n\n{note}", B64.encode([1u8; 31])),
            format!("old 1\n{p}\n"),
            format!("old 1\n\n{}", note.trim_end()),
            format!("old 1\n{}\n{note}", "AAAA\n".repeat(64)),
            format!("old 1\n{}\n{note}", format!("{p}\n").repeat(64)),
            String::new(),
        ] {
            assert!(
                matches!(AddCheckpoint::parse(&bad), Err(WitnessError::Malformed(_))),
                "{bad:?}"
            );
        }
        let ok63 = format!("old 1\n{}\n{note}", format!("{p}\n").repeat(63));
        assert_eq!(AddCheckpoint::parse(&ok63).unwrap().proof.len(), 63);
        let huge = format!("old 1\n\n{note}{}", "x".repeat(MAX_REQUEST_BYTES));
        assert!(matches!(
            AddCheckpoint::parse(&huge),
            Err(WitnessError::TooLarge)
        ));
    }

    #[test]
    fn checkpoint_head() {
        let body = format!("tongban/audit/n1\n12\n{}\ntime x\nmap y\n", h(4));
        let head = CheckpointHead::parse(&body).unwrap();
        assert_eq!(head.origin, "tongban/audit/n1");
        assert_eq!(head.size, 12);
        assert_eq!(head.root, [4; 32]);
        assert!(CheckpointHead::parse(&format!("o\n012\n{}\n", h(4))).is_err());
        assert!(CheckpointHead::parse("o\n12\nAAAA\n").is_err());
        assert!(CheckpointHead::parse("\n12\n").is_err());
    }
}
