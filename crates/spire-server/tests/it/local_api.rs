//! End-to-end tests of the real `spire-server` binary: config, local socket APIs, CLI, restart,
//! crash safety, CA rotation through LocalAuthority, UpstreamAuthority "disk".

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use spire_testkit::{
    Cli, CliOutput, DataStoreConfig, KeyManagerConfig, Process, ServerConfig, TestCa, UpstreamDisk,
    temp_dir, wait_until_sync,
};

const BIN: &str = env!("CARGO_BIN_EXE_spire-server");
const START_TIMEOUT: Duration = Duration::from_secs(60);

struct Server {
    dir: tempfile::TempDir,
    config: ServerConfig,
    config_path: PathBuf,
    process: Option<Process>,
}

impl Server {
    fn new(configure: impl FnOnce(ServerConfig) -> ServerConfig) -> Server {
        let dir = temp_dir();
        let config = configure(
            ServerConfig::new("example.org", dir.path())
                .key_manager(KeyManagerConfig::Disk(dir.path().join("data/keys.json"))),
        );
        let config_path = config.write(&dir.path().join("server.conf")).unwrap();
        let mut s = Server {
            dir,
            config,
            config_path,
            process: None,
        };
        s.start();
        s
    }

    fn start(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.arg("run").arg("-config").arg(&self.config_path);
        let p =
            Process::spawn_logging_to("spire-server", cmd, &self.dir.path().join("logs")).unwrap();
        self.process = Some(p);
        let sock = self.config.socket_path.clone();
        wait_until_sync(START_TIMEOUT, "server healthy", || {
            cli(&["healthcheck", "-socketPath", sock.to_str().unwrap()])
                .status
                .success()
        })
        .unwrap();
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.terminate(Duration::from_secs(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    fn sock(&self) -> &str {
        self.config.socket_path.to_str().unwrap()
    }

    /// Runs `spire-server <args> -socketPath <sock>`.
    fn run(&self, args: &[&str]) -> CliOutput {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-socketPath", self.sock()]);
        cli(&all)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}\n{}",
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// Runs `args`, asserting that it fails with `want` in its stderr.
    fn fails_with(&self, args: &[&str], want: &str) {
        let out = self.run(args);
        assert!(
            !out.status.success() && out.stderr.contains(want),
            "{}",
            out.stderr
        );
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-output", "json"]);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Sets a bundle for `spiffe://fed.org` (a new CA, written to `fed.pem`).
    fn set_fed_org_bundle(&self) {
        let fed = TestCa::new("fed root");
        std::fs::write(self.path("fed.pem"), fed.cert_pem()).unwrap();
        self.ok(&[
            "bundle",
            "set",
            "-id",
            "spiffe://fed.org",
            "-path",
            self.path("fed.pem").to_str().unwrap(),
        ]);
    }

    /// `x509 mint -spiffeID <spiffe> <extra> -write <dir>/<name>`: returns that directory.
    fn mint_into(&self, name: &str, spiffe: &str, extra: &[&str]) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut args = vec!["x509", "mint", "-spiffeID", spiffe];
        args.extend_from_slice(extra);
        args.extend(["-write", dir.to_str().unwrap()]);
        self.ok(&args);
        dir
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cli(args: &[&str]) -> CliOutput {
    Cli::new(BIN)
        .args(args)
        .timeout(Duration::from_secs(120))
        .run()
        .unwrap()
}

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new(spire_testkit::openssl())
        .args(args)
        .output()
        .unwrap()
}

/// `openssl verify <args>` succeeds.
fn assert_verifies(args: &[&str]) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let v = openssl(&all);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

fn entry_count(s: &Server) -> i64 {
    s.json(&["entry", "count"])["count"].as_i64().unwrap()
}

fn postgres_database() -> Option<String> {
    crate::common::postgres_database("spire_server_it")
}

#[test]
fn entry_round_trip_with_every_option_and_bad_input() {
    entry_round_trip(Server::new(|c| c));
}

#[test]
fn entry_round_trip_on_postgres() {
    let Some(url) = postgres_database() else {
        return;
    };
    entry_round_trip(Server::new(|c| c.datastore(DataStoreConfig::Postgres(url))));
}

#[test]
fn bundle_mint_and_restart_on_postgres() {
    let Some(url) = postgres_database() else {
        return;
    };
    bundle_mint_and_restart(Server::new(|c| c.datastore(DataStoreConfig::Postgres(url))));
}

/// `entry create` of the round trip's entry (the same SPIFFE ID, parent and selectors).
const WEB_ENTRY: [&str; 10] = [
    "entry",
    "create",
    "-spiffeID",
    "spiffe://example.org/web",
    "-parentID",
    "spiffe://example.org/spire/agent/join_token/abc",
    "-selector",
    "unix:uid:1000",
    "-selector",
    "k8s:ns:prod",
];

fn entry_round_trip(s: Server) {
    // Federated bundle needed for -federatesWith.
    s.set_fed_org_bundle();

    let out = s.ok(&[
        WEB_ENTRY.as_slice(),
        &[
            "-x509SVIDTTL",
            "300",
            "-jwtSVIDTTL",
            "60",
            "-dns",
            "web.example.org",
            "-dns",
            "www.example.org",
            "-federatesWith",
            "spiffe://fed.org",
            "-admin",
            "-downstream",
            "-storeSVID",
            "-entryExpiry",
            "4102444800",
            "-hint",
            "web",
            "-entryID",
            "my-entry-1",
            "-jwtSVIDIncludeJTI",
            "-disableX509SVIDPrefetch",
        ],
    ]
    .concat());
    for want in [
        "Entry ID         : my-entry-1",
        "SPIFFE ID        : spiffe://example.org/web",
        "Parent ID        : spiffe://example.org/spire/agent/join_token/abc",
        "X509-SVID TTL    : 300",
        "JWT-SVID TTL     : 60",
        "Selector         : k8s:ns:prod",
        "Selector         : unix:uid:1000",
        "DNS name         : web.example.org",
        "FederatesWith    : fed.org",
        "Admin            : true",
        "Downstream       : true",
        "StoreSvid        : true",
        "Hint             : web",
        "Expiration time  : 2100-01-01 00:00:00 +0000 UTC",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    let shown = s.json(&["entry", "show", "-entryID", "my-entry-1"]);
    let e = &shown["entries"][0];
    assert_eq!(
        e["dns_names"],
        serde_json::json!(["web.example.org", "www.example.org"])
    );
    assert_eq!(e["additional_attributes"]["jwt_svid_include_jti"], true);
    assert_eq!(
        e["additional_attributes"]["disable_x509_svid_prefetch"],
        true
    );

    // Filters.
    let by_sel = s.json(&["entry", "show", "-selector", "k8s:ns:prod"]);
    assert_eq!(by_sel["entries"].as_array().unwrap().len(), 1);
    let none = s.json(&["entry", "show", "-selector", "k8s:ns:dev"]);
    assert!(none["entries"].as_array().unwrap().is_empty());

    // Duplicate: AlreadyExists, carrying the existing entry.
    let dup = s.run(&WEB_ENTRY);
    assert!(!dup.status.success());
    assert!(
        dup.stderr.contains("AlreadyExists") && dup.stderr.contains("my-entry-1"),
        "{}",
        dup.stderr
    );

    // Update.
    let out = s.ok(&[
        "entry",
        "update",
        "-entryID",
        "my-entry-1",
        "-spiffeID",
        "spiffe://example.org/web2",
        "-parentID",
        "spiffe://example.org/spire/agent/join_token/abc",
        "-selector",
        "unix:uid:2000",
        "-x509SVIDTTL",
        "600",
    ]);
    assert!(
        out.contains("SPIFFE ID        : spiffe://example.org/web2"),
        "{out}"
    );
    assert!(out.contains("Revision         : 1"), "{out}");
    assert!(out.contains("X509-SVID TTL    : 600"), "{out}");
    assert!(!out.contains("Admin"), "{out}");

    // Bad input, each naming what is wrong.
    let p = ["-parentID", "spiffe://example.org/a"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["-spiffeID", "notanid", "-selector", "a:b"], "notanid"),
        (
            vec!["-spiffeID", "spiffe://Example.org/x", "-selector", "a:b"],
            "uppercase",
        ),
        (
            vec!["-spiffeID", "spiffe://example.org/x", "-selector", "ab"],
            "type:value",
        ),
        (
            vec![
                "-spiffeID",
                "spiffe://example.org/x",
                "-selector",
                "a:b",
                "-x509SVIDTTL",
                "-5",
            ],
            "x509SVIDTTL",
        ),
        (
            vec![
                "-spiffeID",
                "spiffe://example.org/x",
                "-selector",
                "a:b",
                "-bogusFlag",
                "1",
            ],
            "-bogusFlag",
        ),
        (
            vec!["-spiffeID", "spiffe://other.org/x", "-selector", "a:b"],
            "not a member",
        ),
        (
            vec![
                "-spiffeID",
                "spiffe://example.org/x",
                "-selector",
                "a:b",
                "-dns",
                "bad_dns",
            ],
            "bad_dns",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["entry", "create"];
        all.extend(p);
        all.extend(args.iter().copied());
        let out = s.run(&all);
        assert!(!out.status.success(), "{all:?} succeeded");
        assert!(
            out.stderr.contains(want),
            "{all:?}: {:?} does not mention {want:?}",
            out.stderr
        );
    }
    // Negative TTL through the API (-data bypasses the CLI check).
    std::fs::write(
        s.path("neg.json"),
        r#"{"entries":[{"spiffe_id":"spiffe://example.org/n","parent_id":"spiffe://example.org/a",
            "selectors":[{"type":"a","value":"b"}],"x509_svid_ttl":-1}]}"#,
    )
    .unwrap();
    let out = s.run(&[
        "entry",
        "create",
        "-data",
        s.path("neg.json").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("InvalidArgument") && out.stderr.contains("negative"),
        "{}",
        out.stderr
    );

    // Delete.
    let out = s.ok(&["entry", "delete", "-entryID", "my-entry-1"]);
    assert!(out.contains("Deleted entry with ID: my-entry-1"));
    assert_eq!(entry_count(&s), 0);
    s.fails_with(&["entry", "delete", "-entryID", "my-entry-1"], "NotFound");
}

#[test]
fn bad_config_stops_the_start_naming_file_and_key() {
    let dir = temp_dir();
    let path = dir.path().join("bad.conf");
    std::fs::write(
        &path,
        "server {\n  trust_domain = \"example.org\"\n  bogus_key = 1\n}\n",
    )
    .unwrap();
    for cmd in ["run", "validate"] {
        let out = cli(&[cmd, "-config", path.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(
            out.stderr.contains("bad.conf") && out.stderr.contains("server.bogus_key"),
            "{}",
            out.stderr
        );
    }
    let good = ServerConfig::new("example.org", dir.path())
        .write(&dir.path().join("good.conf"))
        .unwrap();
    let out = cli(&["validate", "-config", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", out.stderr);
    // -expandEnv: $VAR in the file is replaced from the environment.
    let env_conf = dir.path().join("env.conf");
    std::fs::write(
        &env_conf,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace("\"example.org\"", "\"${SPIRE_IT_TD}\""),
    )
    .unwrap();
    let out = Cli::new(BIN)
        .args([
            "validate",
            "-expandEnv",
            "-config",
            env_conf.to_str().unwrap(),
        ])
        .env("SPIRE_IT_TD", "example.org")
        .run()
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let out = cli(&["validate", "-config", env_conf.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "without -expandEnv the literal ${{...}} is not a trust domain"
    );
    // Flags override the file: an invalid trust domain on the command line is reported.
    let out = cli(&[
        "run",
        "-config",
        good.to_str().unwrap(),
        "-trustDomain",
        "Bad.Org",
    ]);
    assert!(!out.status.success());
    assert!(
        out.stderr.to_lowercase().contains("trust"),
        "{}",
        out.stderr
    );
}

#[test]
fn bundle_mint_and_restart_keep_state() {
    bundle_mint_and_restart(Server::new(|c| c));
}

fn bundle_mint_and_restart(mut s: Server) {
    // PEM bundle parses with openssl.
    let pem = s.ok(&["bundle", "show"]);
    std::fs::write(s.path("bundle.pem"), &pem).unwrap();
    let out = openssl(&[
        "x509",
        "-in",
        s.path("bundle.pem").to_str().unwrap(),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("URI:spiffe://example.org"));
    // SPIFFE bundle: JWKS with x509-svid and jwt-svid keys.
    let doc: Value = serde_json::from_str(&s.ok(&["bundle", "show", "-format", "spiffe"])).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    assert!(
        keys.iter()
            .any(|k| k["use"] == "x509-svid" && k["x5c"].as_array().unwrap().len() == 1)
    );
    let jwk = keys
        .iter()
        .find(|k| k["use"] == "jwt-svid")
        .unwrap()
        .clone();

    // x509 mint -write verifies with openssl, one URI SAN, SPIRE's KU/EKU.
    let out_dir = s.mint_into(
        "mint",
        "spiffe://example.org/minted",
        &["-dns", "m.example.org"],
    );
    assert_verifies(&[
        "-CAfile",
        out_dir.join("bundle.pem").to_str().unwrap(),
        out_dir.join("svid.pem").to_str().unwrap(),
    ]);
    let text = openssl(&[
        "x509",
        "-in",
        out_dir.join("svid.pem").to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert_eq!(text.matches("URI:").count(), 1, "{text}");
    assert!(
        text.contains("Digital Signature, Key Encipherment, Key Agreement"),
        "{text}"
    );
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(text.contains("CA:FALSE"));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(out_dir.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // jwt mint validates with an independent JWT library against the bundle's JWKS.
    let token = s.ok(&[
        "jwt",
        "mint",
        "-spiffeID",
        "spiffe://example.org/j",
        "-audience",
        "aud1",
    ]);
    let token = token.trim();
    let key = jsonwebtoken::DecodingKey::from_ec_components(
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["aud1"]);
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation).unwrap();
    assert_eq!(data.claims["sub"], "spiffe://example.org/j");
    assert_eq!(data.header.kid.as_deref(), jwk["kid"].as_str());

    // Restart: entries, bundle and CA survive (disk KeyManager).
    s.ok(&[
        "entry",
        "create",
        "-spiffeID",
        "spiffe://example.org/keep",
        "-parentID",
        "spiffe://example.org/a",
        "-selector",
        "a:b",
    ]);
    let token_out = s.ok(&["token", "generate", "-ttl", "600"]);
    assert!(token_out.starts_with("Token: "), "{token_out}");
    let before = s.json(&["localauthority", "x509", "show"]);
    s.stop();
    s.start();
    assert_eq!(
        s.json(&["localauthority", "x509", "show"])["active"],
        before["active"]
    );
    assert_eq!(s.ok(&["bundle", "show"]), pem);
    assert_eq!(entry_count(&s), 1);
    let info = s.ok(&["debug", "getinfo"]);
    assert!(info.contains("spiffe://example.org/spire/server"), "{info}");
}

#[test]
fn localauthority_rotation_through_the_cli() {
    let s = Server::new(|c| c);
    let state = s.json(&["localauthority", "x509", "show"]);
    let old = state["active"]["authority_id"]
        .as_str()
        .unwrap()
        .to_string();
    // An SVID signed by the old authority.
    let dir1 = s.mint_into("svid1", "spiffe://example.org/a", &[]);

    let prepared = s.json(&["localauthority", "x509", "prepare"]);
    let new = prepared["prepared_authority"]["authority_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Prepared authority is in the bundle before it signs anything.
    let bundle = s.ok(&["bundle", "show"]);
    std::fs::write(s.path("b2.pem"), &bundle).unwrap();
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
    let activated = s.json(&["localauthority", "x509", "activate", "-authorityID", &new]);
    assert_eq!(
        activated["activated_authority"]["authority_id"],
        new.as_str()
    );
    // Both SVIDs verify against the bundle during the overlap.
    let dir2 = s.mint_into("svid2", "spiffe://example.org/a", &[]);
    for d in [&dir1, &dir2] {
        assert_verifies(&[
            "-CAfile",
            s.path("b2.pem").to_str().unwrap(),
            d.join("svid.pem").to_str().unwrap(),
        ]);
    }
    // Taint then revoke the old one; revoke before taint fails with a message.
    s.fails_with(
        &["localauthority", "x509", "revoke", "-authorityID", &old],
        "untainted",
    );
    let t = s.ok(&["localauthority", "x509", "taint", "-authorityID", &old]);
    assert!(
        t.contains("Tainted X.509 authority") && t.contains(&old),
        "{t}"
    );
    let b = s.json(&["bundle", "show"]);
    assert!(
        b["x509_authorities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["tainted"] == true)
    );
    s.ok(&["localauthority", "x509", "revoke", "-authorityID", &old]);
    assert_eq!(
        s.ok(&["bundle", "show"])
            .matches("BEGIN CERTIFICATE")
            .count(),
        1
    );
    s.fails_with(&["localauthority", "x509", "activate"], "-authorityID");

    // JWT authorities: same flow.
    let jwt_old = s.json(&["localauthority", "jwt", "show"])["active"]["authority_id"]
        .as_str()
        .unwrap()
        .to_string();
    let jwt_new =
        s.json(&["localauthority", "jwt", "prepare"])["prepared_authority"]["authority_id"]
            .as_str()
            .unwrap()
            .to_string();
    s.ok(&[
        "localauthority",
        "jwt",
        "activate",
        "-authorityID",
        &jwt_new,
    ]);
    s.ok(&["localauthority", "jwt", "taint", "-authorityID", &jwt_old]);
    s.ok(&["localauthority", "jwt", "revoke", "-authorityID", &jwt_old]);
    let b = s.json(&["bundle", "show"]);
    let kids: Vec<&str> = b["jwt_authorities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec![jwt_new.as_str()]);
}

#[test]
fn kill_during_batch_create_leaves_no_half_written_entry() {
    let mut s = Server::new(|c| c);
    let mut entries = Vec::new();
    for i in 0..1000 {
        entries.push(serde_json::json!({
            "spiffe_id": format!("spiffe://example.org/w/{i}"),
            "parent_id": "spiffe://example.org/spire/agent/x",
            "selectors": [{"type": "unix", "value": format!("uid:{i}")}, {"type": "k8s", "value": "ns:batch"}],
            "dns_names": [format!("w{i}.example.org"), "batch.example.org"],
        }));
    }
    let data = s.path("batch.json");
    std::fs::write(&data, serde_json::json!({ "entries": entries }).to_string()).unwrap();
    let mut create = Command::new(BIN)
        .args([
            "entry",
            "create",
            "-output",
            "json",
            "-data",
            data.to_str().unwrap(),
            "-socketPath",
            s.sock(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill the server once part of the batch is committed.
    wait_until_sync(Duration::from_secs(120), "some entries committed", || {
        entry_count(&s) >= 50
    })
    .unwrap();
    let seen = entry_count(&s);
    s.kill();
    let _ = create.wait();
    s.start();
    let after = s.json(&["entry", "show"]);
    let list = after["entries"].as_array().unwrap();
    assert!(
        list.len() as i64 >= seen,
        "acknowledged entries lost: {} < {seen}",
        list.len()
    );
    for e in list {
        let path = e["spiffe_id"]["path"].as_str().unwrap();
        let i: usize = path.trim_start_matches("/w/").parse().unwrap();
        let mut sels = crate::common::selector_strings(&e["selectors"]);
        sels.sort();
        assert_eq!(
            sels,
            vec!["k8s:ns:batch".to_string(), format!("unix:uid:{i}")],
            "entry {path}"
        );
        assert_eq!(
            e["dns_names"],
            serde_json::json!([format!("w{i}.example.org"), "batch.example.org"])
        );
    }
}

#[test]
fn upstream_disk_svids_chain_to_the_upstream_root() {
    let dir = temp_dir();
    let root = TestCa::new("upstream root");
    let (cert, key) = root.write(dir.path(), "upstream").unwrap();
    let s = Server::new(|c| {
        c.upstream_disk(UpstreamDisk {
            cert_file_path: cert,
            key_file_path: key,
            bundle_file_path: None,
        })
    });
    let bundle = s.ok(&["bundle", "show"]);
    assert_eq!(bundle.trim(), root.cert_pem().trim());
    let out_dir = s.mint_into("mint", "spiffe://example.org/up", &[]);
    let chain = std::fs::read_to_string(out_dir.join("svid.pem")).unwrap();
    assert_eq!(
        chain.matches("BEGIN CERTIFICATE").count(),
        2,
        "leaf + server CA"
    );
    // Split leaf and intermediate for openssl.
    let blocks = pem::parse_many(chain.as_bytes()).unwrap();
    std::fs::write(s.path("leaf.pem"), pem::encode(&blocks[0])).unwrap();
    std::fs::write(s.path("inter.pem"), pem::encode(&blocks[1])).unwrap();
    assert_verifies(&[
        "-CAfile",
        out_dir.join("bundle.pem").to_str().unwrap(),
        "-untrusted",
        s.path("inter.pem").to_str().unwrap(),
        s.path("leaf.pem").to_str().unwrap(),
    ]);
    let _ = Path::new(".");
}

#[test]
fn agents_tokens_federated_bundles_and_logger() {
    let s = Server::new(|c| c.setting("audit_log_enabled", "true"));
    assert!(
        s.ok(&["agent", "list"])
            .contains("No attested agents found")
    );
    assert_eq!(s.json(&["agent", "count"])["count"], 0);
    s.fails_with(
        &[
            "agent",
            "show",
            "-spiffeID",
            "spiffe://example.org/spire/agent/x",
        ],
        "NotFound",
    );
    s.fails_with(
        &[
            "agent",
            "evict",
            "-spiffeID",
            "spiffe://example.org/not-an-agent",
        ],
        "agent namespace",
    );

    // Join token with an alias entry.
    let t = s.json(&[
        "token",
        "generate",
        "-spiffeID",
        "spiffe://example.org/host",
        "-ttl",
        "60",
    ]);
    let token = t["value"].as_str().unwrap();
    let alias = s.json(&["entry", "show", "-spiffeID", "spiffe://example.org/host"]);
    assert_eq!(
        alias["entries"][0]["parent_id"]["path"],
        format!("/spire/agent/join_token/{token}")
    );

    // Federated bundles: set, list, count, delete with modes.
    s.set_fed_org_bundle();
    assert!(s.ok(&["bundle", "list"]).contains("fed.org"));
    assert_eq!(s.json(&["bundle", "count"])["count"], 2);
    let own = s.run(&[
        "bundle",
        "set",
        "-id",
        "spiffe://example.org",
        "-path",
        s.path("fed.pem").to_str().unwrap(),
    ]);
    assert!(!own.status.success());
    s.ok(&[
        "entry",
        "create",
        "-spiffeID",
        "spiffe://example.org/f",
        "-parentID",
        "spiffe://example.org/a",
        "-selector",
        "a:b",
        "-federatesWith",
        "spiffe://fed.org",
    ]);
    let restricted = s.run(&["bundle", "delete", "-id", "spiffe://fed.org"]);
    assert!(
        !restricted.status.success(),
        "RESTRICT must refuse while an entry federates"
    );
    s.ok(&[
        "bundle",
        "delete",
        "-id",
        "spiffe://fed.org",
        "-mode",
        "dissociate",
    ]);
    let e = s.json(&["entry", "show", "-spiffeID", "spiffe://example.org/f"]);
    assert!(
        e["entries"][0]["federates_with"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // SPIFFE-format bundles round trip through bundle set / bundle list.
    let own = s.ok(&["bundle", "show", "-format", "spiffe"]);
    std::fs::write(s.path("other.json"), &own).unwrap();
    s.ok(&[
        "bundle",
        "set",
        "-id",
        "spiffe://other.org",
        "-format",
        "spiffe",
        "-path",
        s.path("other.json").to_str().unwrap(),
    ]);
    let listed: Value = serde_json::from_str(&s.ok(&[
        "bundle",
        "list",
        "-id",
        "spiffe://other.org",
        "-format",
        "spiffe",
    ]))
    .unwrap();
    let own: Value = serde_json::from_str(&own).unwrap();
    assert_eq!(listed["keys"], own["keys"]);
    std::fs::write(
        s.path("broken.json"),
        r#"{"keys":[{"use":"x509-svid","kty":"EC"}]}"#,
    )
    .unwrap();
    s.fails_with(
        &[
            "bundle",
            "set",
            "-id",
            "spiffe://bad.org",
            "-format",
            "spiffe",
            "-path",
            s.path("broken.json").to_str().unwrap(),
        ],
        "invalid SPIFFE bundle data",
    );

    // Logger.
    let l = s.json(&["logger", "set", "-level", "warn"]);
    assert_eq!(l["current_level"], "WARN");
    let l = s.json(&["logger", "reset"]);
    assert_eq!(l["current_level"], l["launch_level"]);
    let bad = s.run(&["logger", "set", "-level", "loud"]);
    assert!(!bad.status.success() && bad.stderr.contains("loud"));

    // Audit log: one line per operation with the caller's uid and status.
    let logs = s.process.as_ref().unwrap().logs();
    let audit: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("type=\"audit\"") || l.contains("type=audit"))
        .collect();
    assert!(
        audit.iter().any(|l| l.contains("CreateJoinToken")
            && l.contains("caller_uid")
            && l.contains("success")),
        "{}",
        audit.join("\n")
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("GetAgent") && l.contains("error")),
        "{}",
        audit.join("\n")
    );
}

#[test]
fn ca_rotates_by_itself_with_a_short_ca_ttl() {
    // ca_ttl 30s: prepare when < 15s remain, activate when < 5s remain (checks every 10s).
    let s = Server::new(|c| {
        c.setting("ca_ttl", "\"30s\"")
            .setting("default_x509_svid_ttl", "\"5s\"")
    });
    let first = s.json(&["localauthority", "x509", "show"])["active"]["authority_id"]
        .as_str()
        .unwrap()
        .to_string();
    let old_dir = s.mint_into("old", "spiffe://example.org/r", &[]);

    let mut prepared = String::new();
    wait_until_sync(
        Duration::from_secs(60),
        "a prepared X.509 authority",
        || {
            let st = s.json(&["localauthority", "x509", "show"]);
            match st["prepared"]["authority_id"].as_str() {
                Some(id) if !id.is_empty() => {
                    // Published before use: while still only prepared, the bundle has it.
                    if st["active"]["authority_id"] == first.as_str() {
                        assert_eq!(
                            s.ok(&["bundle", "show"])
                                .matches("BEGIN CERTIFICATE")
                                .count(),
                            2
                        );
                    }
                    prepared = id.to_string();
                    true
                }
                _ => st["active"]["authority_id"] != first.as_str(),
            }
        },
    )
    .unwrap();
    wait_until_sync(
        Duration::from_secs(60),
        "the prepared authority becomes active",
        || s.json(&["localauthority", "x509", "show"])["active"]["authority_id"] != first.as_str(),
    )
    .unwrap();
    let new_dir = s.mint_into("new", "spiffe://example.org/r", &[]);
    // Both SVIDs verify against the current bundle during the overlap.
    let bundle = new_dir.join("bundle.pem");
    for d in [&old_dir, &new_dir] {
        assert_verifies(&[
            "-no_check_time",
            "-CAfile",
            bundle.to_str().unwrap(),
            d.join("svid.pem").to_str().unwrap(),
        ]);
    }
    assert!(!prepared.is_empty());
}
