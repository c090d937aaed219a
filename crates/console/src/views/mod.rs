//! HTML, rendered with maud: every spliced value is escaped, and nothing
//! here opts out (no `PreEscaped`).
//!
//! Views take what the model layer read (entries, checkpoints, reports) and
//! return markup; they never read the store, write the log or see a request.

pub(crate) mod entry;
pub(crate) mod integrity;
mod layout;
pub(crate) mod overview;
pub(crate) mod search;
pub(crate) mod subject;

pub(crate) use layout::{Frame, error_page, login};
