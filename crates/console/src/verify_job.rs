//! "Verify now": one background verification at a time, with progress.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tongban_audit::{Severity, VerifyOptions};

use crate::backend::{AdminAct, ConsoleBackend};

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyStatus {
    /// "idle", "running", "passed", "failed" or "error".
    pub state: &'static str,
    pub started_by: String,
    pub started: Option<DateTime<Utc>>,
    pub node: String,
    pub checked: u64,
    pub total: u64,
    pub elapsed_ms: u64,
    pub nodes: Vec<NodeSummary>,
    pub findings: Vec<FindingLine>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeSummary {
    pub node: String,
    pub tree_size: u64,
    pub entries_checked: u64,
    pub checkpoints_checked: u64,
    pub latest_signed_size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FindingLine {
    pub severity: &'static str,
    pub node: String,
    pub location: String,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct VerifyJob {
    status: Arc<Mutex<VerifyStatus>>,
}

fn lock(m: &Mutex<VerifyStatus>) -> std::sync::MutexGuard<'_, VerifyStatus> {
    // Each update is a plain field assignment; a poisoned lock holds a usable value.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl VerifyJob {
    pub fn status(&self) -> VerifyStatus {
        let mut s = lock(&self.status).clone();
        if s.state.is_empty() {
            s.state = "idle";
        }
        s
    }

    pub fn status_json(&self) -> String {
        serde_json::to_string(&self.status()).unwrap_or_else(|_| "{}".into())
    }

    /// Starts a verification unless one is running; false if one was.
    pub fn start(&self, backend: &ConsoleBackend, user: &str) -> bool {
        {
            let mut s = lock(&self.status);
            if s.state == "running" {
                return false;
            }
            *s = VerifyStatus {
                state: "running",
                started_by: user.to_owned(),
                started: Some(Utc::now()),
                ..Default::default()
            };
        }
        let status = self.status.clone();
        let backend = backend.clone();
        let user = user.to_owned();
        tokio::spawn(async move {
            let started = Instant::now();
            let progress_status = status.clone();
            let mut progress = move |p: tongban_audit::Progress<'_>| {
                let mut s = lock(&progress_status);
                s.node = p.node.to_owned();
                s.checked = p.checked;
                s.total = p.total;
                s.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            };
            let result = tongban_audit::verify(
                backend.store.as_ref(),
                &backend.keyring,
                &VerifyOptions::default(),
                &mut progress,
            )
            .await;
            let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let detail;
            {
                let mut s = lock(&status);
                s.elapsed_ms = elapsed_ms;
                match result {
                    Ok(report) => {
                        s.state = if report.is_ok() { "passed" } else { "failed" };
                        s.nodes = report
                            .nodes
                            .iter()
                            .map(|n| NodeSummary {
                                node: n.node.clone(),
                                tree_size: n.tree_size,
                                entries_checked: n.entries_checked,
                                checkpoints_checked: n.checkpoints_checked,
                                latest_signed_size: n.latest_signed_size,
                            })
                            .collect();
                        s.checked = s.nodes.iter().map(|n| n.entries_checked).sum();
                        s.total = s.checked;
                        s.findings = report
                            .findings
                            .iter()
                            .map(|f| FindingLine {
                                severity: match f.severity {
                                    Severity::Error => "error",
                                    Severity::Warning => "warning",
                                },
                                node: f.node.clone(),
                                location: f.location.to_string(),
                                message: f.message.clone(),
                            })
                            .collect();
                        let errors = report.errors().count();
                        s.message = if report.is_ok() {
                            format!(
                                "{} entries on {} node(s) match their signed checkpoints",
                                s.checked,
                                s.nodes.len()
                            )
                        } else {
                            format!("{errors} error(s) found")
                        };
                    }
                    Err(e) => {
                        s.state = "error";
                        s.message = format!("verification could not run: {e}");
                    }
                }
                detail = format!("result={} {}", s.state, s.message);
            }
            if let Err(e) = backend
                .record(AdminAct::new(&user, "console.verify-finished").detail(detail))
                .await
            {
                tracing::error!(error = %e, "cannot log the end of a verification");
            }
        });
        true
    }
}
