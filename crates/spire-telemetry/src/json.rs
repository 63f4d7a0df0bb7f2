//! JSON log lines shaped like SPIRE's (logrus): one object per line with `time` (RFC 3339,
//! UTC), `level` (`debug`, `info`, `warning`, `error`, `trace`), `msg`, and the event's fields at
//! the top level. A field named like one of those three is written as `fields.<name>`, as logrus
//! does.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpireJson {
    /// Add `file` and `line`.
    pub(crate) source_location: bool,
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let key = match field.name() {
            "message" => "msg".to_owned(),
            name @ ("msg" | "time" | "level") => format!("fields.{name}"),
            name => name.to_owned(),
        };
        self.0.insert(key, value);
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for SpireJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut map = Map::new();
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        map.insert("time".to_owned(), Value::from(time));
        map.insert("level".to_owned(), Value::from(level_name(meta.level())));
        event.record(&mut Fields(&mut map));
        map.entry("msg".to_owned())
            .or_insert_with(|| Value::from(""));
        if self.source_location {
            if let Some(file) = meta.file() {
                map.insert("file".to_owned(), Value::from(file));
            }
            if let Some(line) = meta.line() {
                map.insert("line".to_owned(), Value::from(line));
            }
        }
        writeln!(writer, "{}", Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use crate::{LogConfig, LogFormat, LogLevel, build};

    #[test]
    fn reserved_names_move_under_fields_and_values_keep_their_types() {
        let dir = std::env::temp_dir().join(format!("spire-telemetry-{}-json", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.json");
        let (subscriber, _handle) = build(&LogConfig {
            level: LogLevel::Trace,
            format: LogFormat::Json,
            file: Some(path.clone()),
            source_location: true,
        })
        .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                msg = "field",
                count = 3u64,
                ok = true,
                ratio = 0.5,
                "Message"
            );
            tracing::debug!(target: "h2::codec", "Library detail shown at trace");
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first = &lines[0];
        assert_eq!(first["msg"], "Message");
        assert_eq!(first["fields.msg"], "field");
        assert_eq!(first["level"], "warning");
        assert_eq!(first["count"], 3);
        assert_eq!(first["ok"], true);
        assert_eq!(first["ratio"], 0.5);
        assert!(first["file"].as_str().unwrap().ends_with("json.rs"));
        assert!(first["line"].as_u64().is_some());
        assert_eq!(lines[1]["level"], "debug");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
