//! The audit log (`audit_log_enabled`): one structured line per API operation and per batch item.
//!
//! Mirrors `pkg/server/api/audit`: fields `type=audit`, `request_id`, `status`
//! (`success`/`error`), `status_code`, `status_message`, the request fields, and the caller
//! (`caller_uid`, `caller_gid`, `caller_path` over the socket; `caller_addr`, `caller_id` over TLS).

use std::fmt::Write as _;

use tonic::Status;

use super::caller::{Caller, CallerKind};

/// Audit context of one RPC.
#[derive(Debug, Clone)]
pub(crate) struct Audit {
    enabled: bool,
    method: &'static str,
    request_id: String,
    caller: CallerFields,
}

#[derive(Debug, Clone, Default)]
struct CallerFields {
    uid: Option<u32>,
    gid: Option<u32>,
    pid: Option<i32>,
    path: Option<String>,
    addr: Option<String>,
    id: Option<String>,
}

impl Audit {
    pub(crate) fn new(enabled: bool, method: &'static str, caller: &Caller) -> Self {
        let caller = if enabled {
            caller_fields(caller)
        } else {
            CallerFields::default()
        };
        Audit {
            enabled,
            method,
            request_id: uuid::Uuid::new_v4().to_string(),
            caller,
        }
    }

    /// Records a successful operation (or batch item) with its request fields.
    pub(crate) fn emit_ok(&self, fields: &[(&str, String)]) {
        self.record(None, fields);
    }

    /// Records a failed operation (or batch item).
    pub(crate) fn emit_error(&self, status: &Status, fields: &[(&str, String)]) {
        self.record(Some(status), fields);
    }

    /// One audit line: success, or the `failure` with its code and message.
    fn record(&self, failure: Option<&Status>, fields: &[(&str, String)]) {
        if !self.enabled {
            return;
        }
        tracing::info!(
            target: "audit",
            r#type = "audit",
            request_id = %self.request_id,
            method = self.method,
            status = if failure.is_some() { "error" } else { "success" },
            status_code = failure.map(|s| tracing::field::debug(s.code())),
            status_message = failure.map(Status::message),
            caller_uid = self.caller.uid,
            caller_gid = self.caller.gid,
            caller_pid = self.caller.pid,
            caller_path = self.caller.path.as_deref(),
            caller_addr = self.caller.addr.as_deref(),
            caller_id = self.caller.id.as_deref(),
            fields = %render(fields),
            "API accessed"
        );
    }

    /// Records the outcome of `result`.
    pub(crate) fn emit<T>(&self, result: &Result<T, Status>, fields: &[(&str, String)]) {
        match result {
            Ok(_) => self.emit_ok(fields),
            Err(s) => self.emit_error(s, fields),
        }
    }

    /// Records a batch item given its wire status.
    pub(crate) fn emit_item(&self, status: &crate::pb::types::Status, fields: &[(&str, String)]) {
        if status.code == 0 {
            self.emit_ok(fields);
        } else {
            self.emit_error(
                &Status::new(tonic::Code::from_i32(status.code), status.message.clone()),
                fields,
            );
        }
    }
}

fn caller_fields(c: &Caller) -> CallerFields {
    match &c.kind {
        CallerKind::Local {
            uid,
            gid,
            pid,
            path,
        } => CallerFields {
            uid: *uid,
            gid: *gid,
            pid: *pid,
            path: path.as_ref().map(|p| p.display().to_string()),
            ..CallerFields::default()
        },
        CallerKind::Admin { addr, .. }
        | CallerKind::Agent { addr, .. }
        | CallerKind::Downstream { addr, .. }
        | CallerKind::Unauthenticated { addr, .. } => CallerFields {
            addr: addr.map(|a| a.to_string()),
            id: c.spiffe_id().map(|i| i.to_string()),
            ..CallerFields::default()
        },
    }
}

fn render(fields: &[(&str, String)]) -> String {
    let mut s = String::new();
    for (k, v) in fields {
        if !s.is_empty() {
            s.push(' ');
        }
        let _ = write!(s, "{k}={v:?}");
    }
    s
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    use super::*;

    /// Collects the recorded fields of every event as `name=value` strings.
    #[derive(Clone, Default)]
    struct Fields(Arc<Mutex<Vec<Vec<String>>>>);

    struct Line(Vec<String>);

    impl Visit for Line {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push(format!("{}={value:?}", field.name()));
        }
    }

    impl Subscriber for Fields {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut line = Line(vec![format!("target={}", event.metadata().target())]);
            event.record(&mut line);
            self.0.lock().unwrap().push(line.0);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[test]
    fn success_and_error_lines_carry_their_fields() {
        let fields = Fields::default();
        let audit = Audit::new(true, "GetAgent", &Caller::local());
        tracing::subscriber::with_default(fields.clone(), || {
            audit.emit(&Ok::<_, Status>(()), &[("id", "a".to_string())]);
            audit.emit_item(
                &crate::pb::types::Status {
                    code: tonic::Code::NotFound as i32,
                    message: "agent not found".into(),
                },
                &[],
            );
            Audit::new(false, "GetAgent", &Caller::local()).emit_ok(&[]);
        });
        let lines = fields.0.lock().unwrap().clone();
        let id = &audit.request_id;
        let line = |status: &str, rest: &[&str]| {
            let mut v = vec![
                "target=audit".to_string(),
                "message=API accessed".into(),
                "type=\"audit\"".into(),
                format!("request_id={id}"),
                "method=\"GetAgent\"".into(),
                format!("status=\"{status}\""),
            ];
            v.extend(rest.iter().map(|s| s.to_string()));
            v
        };
        assert_eq!(
            lines,
            vec![
                line("success", &["fields=id=\"a\""]),
                line(
                    "error",
                    &[
                        "status_code=NotFound",
                        "status_message=\"agent not found\"",
                        "fields=",
                    ]
                ),
            ]
        );
    }
}
