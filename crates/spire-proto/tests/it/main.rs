//! Descriptor-compatibility tests: our own `.proto` files against the upstream definitions.
//!
//! The upstream trees are the ones shipped inside the `spire-api` crate package
//! (`spire-api-sdk/proto/**`) and the `spiffe` crate package (`src/proto/workload.proto`). They are
//! located with `cargo metadata`, compiled here with protox, and compared with
//! [`spire_proto::FILE_DESCRIPTOR_SET`]: every upstream service and method must exist in ours with
//! the same request/response types and streaming shape, every upstream message must exist with
//! every field under the same number, name, type, label, oneof and presence, and every upstream
//! enum value must exist with the same number. Ours may add (newer SPIRE has more than the crate
//! snapshots). All differences are reported in one failure message.

#![allow(
    clippy::unwrap_used,
    reason = "test binary: a panic in a helper is a test failure"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet,
    ServiceDescriptorProto,
};

// ---------------------------------------------------------------------------------------------
// Locating and compiling the upstream definitions
// ---------------------------------------------------------------------------------------------

/// Directory of the package `name` that spire-proto itself depends on (dev-dependency).
fn dependency_dir(name: &str) -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(manifest_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    let own_manifest = manifest_dir.join("Cargo.toml");
    let packages = meta["packages"].as_array().unwrap();
    let own_id = packages
        .iter()
        .find(|p| Path::new(p["manifest_path"].as_str().unwrap()) == own_manifest)
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .unwrap();
    let node = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"].as_str() == Some(&own_id))
        .unwrap();
    let dep_ids: Vec<&str> = node["deps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["pkg"].as_str().unwrap())
        .collect();
    let package = packages
        .iter()
        .find(|p| p["name"] == name && dep_ids.contains(&p["id"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("spire-proto has no dependency named {name}"));
    Path::new(package["manifest_path"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf()
}

fn collect_protos(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_protos(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path.strip_prefix(root).unwrap().to_path_buf());
        }
    }
}

fn compile_tree(root: &Path) -> FileDescriptorSet {
    let mut files = Vec::new();
    collect_protos(root, root, &mut files);
    files.sort();
    assert!(
        !files.is_empty(),
        "no .proto files under {}",
        root.display()
    );
    protox::compile(&files, [root]).unwrap()
}

/// spire-api-sdk's server and agent APIs and types, as shipped in the `spire-api` package.
fn upstream_spire_api() -> FileDescriptorSet {
    compile_tree(&dependency_dir("spire-api").join("spire-api-sdk/proto"))
}

/// The SPIFFE Workload API as shipped in the `spiffe` package.
fn upstream_workload() -> FileDescriptorSet {
    let root = dependency_dir("spiffe").join("src/proto");
    protox::compile(["workload.proto"], [root]).unwrap()
}

fn ours() -> FileDescriptorSet {
    FileDescriptorSet::decode(spire_proto::FILE_DESCRIPTOR_SET).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Indexing descriptors by fully qualified name
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Index {
    messages: BTreeMap<String, DescriptorProto>,
    enums: BTreeMap<String, EnumDescriptorProto>,
    services: BTreeMap<String, ServiceDescriptorProto>,
}

fn qualify(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        format!(".{name}")
    } else {
        format!("{scope}.{name}")
    }
}

fn index_message(index: &mut Index, scope: &str, msg: &DescriptorProto) {
    let name = qualify(scope, msg.name());
    for nested in &msg.nested_type {
        index_message(index, &name, nested);
    }
    for e in &msg.enum_type {
        index.enums.insert(qualify(&name, e.name()), e.clone());
    }
    index.messages.insert(name, msg.clone());
}

/// Indexes `fds`, skipping the well-known `google.protobuf` files (they come from protox).
fn index(fds: &FileDescriptorSet) -> Index {
    let mut index = Index::default();
    for file in &fds.file {
        if file.package() == "google.protobuf" {
            continue;
        }
        let scope = if file.package().is_empty() {
            String::new()
        } else {
            format!(".{}", file.package())
        };
        for msg in &file.message_type {
            index_message(&mut index, &scope, msg);
        }
        for e in &file.enum_type {
            index.enums.insert(qualify(&scope, e.name()), e.clone());
        }
        for svc in &file.service {
            index
                .services
                .insert(qualify(&scope, svc.name()), svc.clone());
        }
    }
    index
}

// ---------------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------------

/// Everything about a field that affects the wire or the generated API.
fn field_shape(msg: &DescriptorProto, field: &FieldDescriptorProto, idx: &Index) -> String {
    let label = match field.label() {
        Label::Optional => "singular",
        Label::Required => "required",
        Label::Repeated => "repeated",
    };
    let ty = match field.r#type() {
        Type::Message | Type::Enum | Type::Group => {
            format!("{:?} {}", field.r#type(), field.type_name())
        }
        other => format!("{other:?}"),
    };
    let is_map = field.r#type() == Type::Message
        && idx
            .messages
            .get(field.type_name())
            .and_then(|m| m.options.as_ref())
            .is_some_and(|o| o.map_entry());
    let oneof = field
        .oneof_index
        .filter(|_| !field.proto3_optional())
        .and_then(|i| msg.oneof_decl.get(usize::try_from(i).unwrap()))
        .map(|o| format!(" oneof {}", o.name()))
        .unwrap_or_default();
    let optional = if field.proto3_optional() {
        " proto3-optional"
    } else {
        ""
    };
    let map = if is_map { " map" } else { "" };
    format!("{} {label} {ty}{map}{oneof}{optional}", field.name())
}

/// Lists every way in which `ours` fails to carry `upstream` (empty = compatible).
fn differences(upstream: &FileDescriptorSet, ours: &FileDescriptorSet) -> Vec<String> {
    let up = index(upstream);
    let our = index(ours);
    let mut diffs = Vec::new();

    for (name, svc) in &up.services {
        let Some(our_svc) = our.services.get(name) else {
            diffs.push(format!("service {name}: missing"));
            continue;
        };
        for method in &svc.method {
            let Some(our_method) = our_svc.method.iter().find(|m| m.name() == method.name()) else {
                diffs.push(format!("method {name}/{}: missing", method.name()));
                continue;
            };
            let shape = |m: &prost_types::MethodDescriptorProto| {
                format!(
                    "({}{}) returns ({}{})",
                    if m.client_streaming() { "stream " } else { "" },
                    m.input_type(),
                    if m.server_streaming() { "stream " } else { "" },
                    m.output_type()
                )
            };
            if shape(method) != shape(our_method) {
                diffs.push(format!(
                    "method {name}/{}: upstream {}, ours {}",
                    method.name(),
                    shape(method),
                    shape(our_method)
                ));
            }
        }
    }

    for (name, msg) in &up.messages {
        let Some(our_msg) = our.messages.get(name) else {
            diffs.push(format!("message {name}: missing"));
            continue;
        };
        let up_map = msg.options.as_ref().is_some_and(|o| o.map_entry());
        let our_map = our_msg.options.as_ref().is_some_and(|o| o.map_entry());
        if up_map != our_map {
            diffs.push(format!(
                "message {name}: map entry upstream {up_map}, ours {our_map}"
            ));
        }
        for field in &msg.field {
            let Some(our_field) = our_msg.field.iter().find(|f| f.number() == field.number())
            else {
                diffs.push(format!(
                    "message {name}: field {} = {} missing",
                    field.name(),
                    field.number()
                ));
                continue;
            };
            let (want, got) = (
                field_shape(msg, field, &up),
                field_shape(our_msg, our_field, &our),
            );
            if want != got {
                diffs.push(format!(
                    "message {name}: field {}: upstream `{want}`, ours `{got}`",
                    field.number()
                ));
            }
        }
    }

    for (name, e) in &up.enums {
        let Some(our_enum) = our.enums.get(name) else {
            diffs.push(format!("enum {name}: missing"));
            continue;
        };
        for value in &e.value {
            match our_enum.value.iter().find(|v| v.name() == value.name()) {
                None => diffs.push(format!("enum {name}: value {} missing", value.name())),
                Some(v) if v.number() != value.number() => diffs.push(format!(
                    "enum {name}: value {} upstream {}, ours {}",
                    value.name(),
                    value.number(),
                    v.number()
                )),
                Some(_) => {}
            }
        }
    }
    diffs
}

fn assert_compatible(what: &str, upstream: &FileDescriptorSet, ours: &FileDescriptorSet) {
    let diffs = differences(upstream, ours);
    assert!(
        diffs.is_empty(),
        "our protos differ from upstream {what} in {} place(s):\n  {}",
        diffs.len(),
        diffs.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn spire_api_sdk_is_wire_compatible() {
    let upstream = upstream_spire_api();
    let up = index(&upstream);
    // Guard against a vacuous pass (e.g. the tree moved inside the package).
    assert!(
        up.services.len() >= 11,
        "only {} upstream services found",
        up.services.len()
    );
    assert!(
        up.messages.len() >= 100,
        "only {} upstream messages found",
        up.messages.len()
    );
    assert_compatible("spire-api-sdk (spire-api crate)", &upstream, &ours());
}

#[test]
fn workload_api_is_wire_compatible() {
    let upstream = upstream_workload();
    let up = index(&upstream);
    let svc = up.services.get(".SpiffeWorkloadAPI").unwrap();
    // Guard against a vacuous pass: the five X509/JWT methods at least (newer copies add WIT).
    assert!(
        svc.method.len() >= 5,
        "only {} Workload API methods upstream",
        svc.method.len()
    );
    assert_compatible("workload.proto (spiffe crate)", &upstream, &ours());
}

#[test]
fn workload_api_has_no_package_and_wit_methods() {
    let ours = ours();
    let file = ours
        .file
        .iter()
        .find(|f| f.service.iter().any(|s| s.name() == "SpiffeWorkloadAPI"))
        .unwrap();
    assert_eq!(
        file.package(),
        "",
        "gRPC paths must be /SpiffeWorkloadAPI/<method>"
    );
    let methods: Vec<&str> = file.service[0].method.iter().map(|m| m.name()).collect();
    assert!(methods.contains(&"FetchWITSVID") && methods.contains(&"FetchWITBundles"));
}

#[test]
fn generated_paths_match_packages() {
    // The generated service names (used in the gRPC paths) come from the packages.
    use spire_proto::agent::debug::debug_server::DebugServer as AgentDebug;
    use spire_proto::server::entry::entry_server::EntryServer;
    use spire_proto::spire_rs::agent::watch_server::WatchServer;
    use spire_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
    use tonic::server::NamedService;

    fn name<T: NamedService>() -> &'static str {
        T::NAME
    }
    assert_eq!(name::<SpiffeWorkloadApiServer<()>>(), "SpiffeWorkloadAPI");
    assert_eq!(name::<EntryServer<()>>(), "spire.api.server.entry.v1.Entry");
    assert_eq!(name::<AgentDebug<()>>(), "spire.agent.debug.v1.Debug");
    assert_eq!(name::<WatchServer<()>>(), "spire_rs.agent.v1.Watch");
}

/// The comparator itself must catch each kind of break; otherwise the tests above prove nothing.
#[test]
fn comparator_detects_breaks() {
    let upstream = upstream_spire_api();
    let base = ours();
    assert_eq!(differences(&upstream, &base), Vec::<String>::new());

    type Edit = fn(&mut FileDescriptorSet);
    fn message<'a>(
        fds: &'a mut FileDescriptorSet,
        pkg: &str,
        name: &str,
    ) -> &'a mut DescriptorProto {
        fds.file
            .iter_mut()
            .filter(|f| f.package() == pkg)
            .flat_map(|f| f.message_type.iter_mut())
            .find(|m| m.name() == name)
            .unwrap()
    }
    fn field<'a>(msg: &'a mut DescriptorProto, name: &str) -> &'a mut FieldDescriptorProto {
        msg.field.iter_mut().find(|f| f.name() == name).unwrap()
    }
    let cases: [(&str, Edit); 7] = [
        ("Entry: field revision_number = 11 missing", |f| {
            field(message(f, "spire.api.types", "Entry"), "revision_number").number = Some(17);
        }),
        ("Entry: field 5: upstream", |f| {
            field(message(f, "spire.api.types", "Entry"), "x509_svid_ttl").r#type =
                Some(Type::Int64 as i32);
        }),
        ("Entry: field 4: upstream", |f| {
            field(message(f, "spire.api.types", "Entry"), "selectors").label =
                Some(Label::Optional as i32);
        }),
        ("X509SVID: field 2: upstream", |f| {
            field(message(f, "spire.api.types", "X509SVID"), "id").type_name =
                Some(".spire.api.types.Selector".to_owned());
        }),
        (
            "method .spire.api.server.entry.v1.Entry/SyncAuthorizedEntries: upstream",
            |f| {
                let svc = f
                    .file
                    .iter_mut()
                    .flat_map(|f| f.service.iter_mut())
                    .find(|s| s.name() == "Entry")
                    .unwrap();
                let m = svc
                    .method
                    .iter_mut()
                    .find(|m| m.name() == "SyncAuthorizedEntries")
                    .unwrap();
                m.client_streaming = Some(false);
            },
        ),
        (
            "method .spire.api.server.svid.v1.SVID/NewJWTSVID: missing",
            |f| {
                let svc = f
                    .file
                    .iter_mut()
                    .flat_map(|f| f.service.iter_mut())
                    .find(|s| s.name() == "SVID")
                    .unwrap();
                svc.method.retain(|m| m.name() != "NewJWTSVID");
            },
        ),
        ("value AGENT_BANNED upstream 4, ours 9", |f| {
            let msg = message(f, "spire.api.types", "PermissionDeniedDetails");
            let v = msg.enum_type[0]
                .value
                .iter_mut()
                .find(|v| v.name() == "AGENT_BANNED")
                .unwrap();
            v.number = Some(9);
        }),
    ];
    for (expected, edit) in cases {
        let mut broken = base.clone();
        edit(&mut broken);
        let diffs = differences(&upstream, &broken);
        assert!(
            diffs.iter().any(|d| d.contains(expected)),
            "a break mentioning `{expected}` went unnoticed; differences: {diffs:?}"
        );
    }
}
