//! The command line: the config check, its error messages, and `explain`.

mod common;

use common::milter::BIN;
use std::{fs, process::Command};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(config: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("milter.conf");
    fs::write(&path, config).unwrap();
    let mut command = Command::new(BIN);
    command.arg("-c").arg(&path).args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE"),
    }
}

#[test]
fn check_prints_the_effective_config() {
    let r = run(
        "action = \"tempfail\"\nown_addresses = [\"192.0.2.25\", \"2001:db8::/64\"]\n[domains.\"Example.COM\"]\naction = \"log\"\n",
        &["-t"],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    for line in [
        "socket = \"inet:127.0.0.1:8895\"",
        "action = \"tempfail\"",
        "own_addresses = [\"192.0.2.25/32\", \"2001:db8::/64\"]",
        "trusted_networks = [\"127.0.0.0/8\", \"::1/128\"]",
        "max_connections = 1000",
        "idle_timeout = \"1h\"",
        "policy_idle_timeout = \"5m\"",
        "stats_interval = \"1h\"",
        "[domains.\"example.com\"]\naction = \"log\"",
    ] {
        assert!(r.stdout.contains(line), "{line} in:\n{}", r.stdout);
    }
}

#[test]
fn environment_overrides_the_file() {
    let r = run(
        "action = \"tempfail\"",
        &["--check-config"],
        &[
            ("BOGUS_HELO_MILTER_ACTION", "log"),
            ("BOGUS_HELO_MILTER_WHITELIST", "a@example.com,b@example.com"),
            ("BOGUS_HELO_MILTER_SOCKET", "inet:8895@::1"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("action = \"log\""), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("whitelist = [\"a@example.com\", \"b@example.com\"]"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("socket = \"inet:[::1]:8895\""),
        "{}",
        r.stdout
    );
    // The types of the keys, not guesses: "0660" stays a string, "" empties a list.
    let r = run(
        "trusted_networks = [\"192.0.2.0/24\"]\nsocket_mode = \"0600\"",
        &["-t"],
        &[
            ("BOGUS_HELO_MILTER_TRUSTED_NETWORKS", ""),
            ("BOGUS_HELO_MILTER_SOCKET_MODE", "0640"),
            ("BOGUS_HELO_MILTER_MAX_CONNECTIONS", "20"),
            ("BOGUS_HELO_MILTER_SKIP_AUTHENTICATED", "false"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    for line in [
        "trusted_networks = []",
        "socket_mode = \"0640\"",
        "max_connections = 20",
        "skip_authenticated = false",
        "# with BOGUS_HELO_MILTER_TRUSTED_NETWORKS from the environment",
    ] {
        assert!(r.stdout.contains(line), "{line} in:\n{}", r.stdout);
    }
}

/// Runs the binary as `nobody`, for what root would be allowed to read anyway.
fn run_as_nobody(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(BIN);
    command.args(args);
    if nix::unistd::geteuid().is_root() {
        command.uid(65534).gid(65534);
    }
    let out = command.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unreadable_and_directory_configs_say_so() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    fs::create_dir(&locked).unwrap();
    fs::write(locked.join("milter.conf"), "").unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let path = locked.join("milter.conf");
    let (code, stderr) = run_as_nobody(&["-t".as_ref(), "-c".as_ref(), path.as_os_str()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: cannot read the configuration file: permission denied",
            path.display()
        )),
        "{stderr}"
    );
    let (code, stderr) = run_as_nobody(&["-t".as_ref(), "-c".as_ref(), dir.path().as_os_str()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("not a regular file (a directory?)"),
        "{stderr}"
    );
}

#[test]
fn help_names_the_default_config_file() {
    let out = Command::new(BIN).arg("-h").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("/etc/bogus-helo-milter/milter.conf"),
        "{help}"
    );
}

#[test]
fn bad_configs_name_the_file_the_key_and_the_value() {
    let cases = [
        (
            "action = \"bounce\"",
            "FILE: action = \"bounce\": expected reject, tempfail, log, tag or off",
        ),
        (
            "own_addresses = [\"192.0.2.300\"]",
            "FILE: own_addresses = \"192.0.2.300\": not an IP address or network",
        ),
        (
            "trusted_networks = [\"10.0.0.0/33\"]",
            "FILE: trusted_networks = \"10.0.0.0/33\": not an IP address or network",
        ),
        ("no_such_key = 1", "FILE: no_such_key: unknown key `no_such_key`"),
        (
            "[domains.\"x.example\"]\naction = \"nope\"",
            "FILE: domains.\"x.example\".action = \"nope\"",
        ),
        (
            "[domains.\"x.example\"]\nactoin = \"log\"",
            "FILE: domains.\"x.example\".actoin: unknown key `actoin`",
        ),
        (
            "whitelist = [\"nobody\"]",
            "FILE: whitelist = \"nobody\": not a mail address",
        ),
        (
            "socket = \"tcp:8895\"",
            "FILE: socket = \"tcp:8895\": expected inet:HOST:PORT",
        ),
        (
            "max_connections = 0",
            "FILE: max_connections = \"0\": expected a number from 1 to 1000000",
        ),
        (
            "policy_idle_timeout = \"500ms\"",
            "FILE: policy_idle_timeout = \"500ms\": must be at least 1s",
        ),
        (
            "policy_idle_timeout = \"soon\"",
            "FILE: policy_idle_timeout = \"soon\": expected number at 0; expected a duration such as \"300s\" or \"5min\"",
        ),
        (
            "max_connections = \"many\"",
            "FILE: max_connections: invalid type: string \"many\", expected u64",
        ),
        // Values of the wrong type are never converted (issue 10).
        (
            "socket_mode = 0o660",
            "FILE: socket_mode: invalid type: integer `432`, expected a string; write the mode as a string, e.g. socket_mode = \"0660\"",
        ),
        (
            "max_connections = true",
            "FILE: max_connections: invalid type: boolean `true`, expected u64",
        ),
        (
            "max_connections = 1.5",
            "FILE: max_connections: invalid type: floating point `1.5`, expected u64",
        ),
        (
            "skip_authenticated = \"no\"",
            "FILE: skip_authenticated: invalid type: string \"no\", expected a boolean",
        ),
        (
            "whitelist = \"a@example.com\"",
            "FILE: whitelist: invalid type: string \"a@example.com\", expected a sequence",
        ),
        // A top-level key written after a [domains] table belongs to that table.
        (
            "[domains.\"x.example\"]\naction = \"log\"\nwhitelist = [\"a@x.example\"]",
            "FILE: domains.\"x.example\".whitelist: unknown key `whitelist`, expected `action` or `rules`; `whitelist` is a top-level key, but in TOML every key after a [domains.\"...\"] header belongs to that table: move it above the first [domains] table",
        ),
        // Entries that normalise to one are an error naming both (issue 10).
        (
            "[domains.\"example.com\"]\naction = \"off\"\n[domains.\"Example.COM.\"]\naction = \"reject\"",
            "FILE: domains = \"example.com\": the same as the entry \"Example.COM.\" (both are \"example.com\"); keep one",
        ),
        (
            "own_names = [\"mx.example.com\", \"MX.example.com.\"]",
            "FILE: own_names = \"MX.example.com.\": the same as the entry \"mx.example.com\"",
        ),
        (
            "whitelist = [\"p@bücher.example\", \"P@xn--bcher-kva.example\"]",
            "FILE: whitelist = \"P@xn--bcher-kva.example\": the same as the entry \"p@bücher.example\" (both are \"p@xn--bcher-kva.example\")",
        ),
        // Names that can never match.
        (
            "[domains.\"*.example.com\"]\naction = \"off\"",
            "FILE: domains.\"*.example.com\" = \"*.example.com\": wildcards are not supported",
        ),
        (
            "[domains.\"example.com..\"]\naction = \"off\"",
            "FILE: domains.\"example.com..\" = \"example.com..\": has an empty label",
        ),
        (
            "whitelist = [\"postmaster\"]",
            "FILE: whitelist = \"postmaster\": not a mail address; expected \"user@example.com\", \"@example.com\" (a whole domain) or \"user@*\"",
        ),
        // Socket spellings: say what is wrong.
        (
            "socket = \"inet:8895\"",
            "FILE: socket = \"inet:8895\": no address to listen on; name one, as in inet:127.0.0.1:8895",
        ),
        (
            "socket = \"inet:127.0.0.1:99999\"",
            "FILE: socket = \"inet:127.0.0.1:99999\": port 99999 is out of range",
        ),
        (
            "socket = \"inet:127.0.0.1:0\"",
            "FILE: socket = \"inet:127.0.0.1:0\": port 0 is out of range",
        ),
        (
            "socket = \"inet:mx.example.com:8895\"",
            "FILE: socket = \"inet:mx.example.com:8895\": \"mx.example.com\" is not an IP address",
        ),
        (
            "socket = \"unix:/\"",
            "FILE: socket = \"unix:/\": the path names a directory",
        ),
        (
            "stats_interval = \"soon\"",
            "FILE: stats_interval = \"soon\"",
        ),
        ("log_level = \"loud\"", "FILE: log_level = \"loud\""),
        (
            "reply_url = \"http://x/a b\"",
            "FILE: reply_url = \"http://x/a b\": must be printable ASCII",
        ),
        ("action = [", "TOML parse error at line 1"),
    ];
    for (config, message) in cases {
        let r = run(config, &["-t"], &[]);
        assert_eq!(r.code, 2, "{config}");
        assert!(r.stderr.contains(message), "{config}: {}", r.stderr);
        assert!(r.stdout.is_empty());
    }
    for (var, value, message) in [
        ("BOGUS_HELO_MILTER_ACTOIN", "log", "FILE with BOGUS_HELO_MILTER_ACTOIN: BOGUS_HELO_MILTER_ACTOIN = \"log\": no such key"),
        ("BOGUS_HELO_MILTER_MAX_CONNECTIONS", "lots", "BOGUS_HELO_MILTER_MAX_CONNECTIONS = \"lots\": expected an integer"),
        ("BOGUS_HELO_MILTER_SKIP_AUTHENTICATED", "1", "BOGUS_HELO_MILTER_SKIP_AUTHENTICATED = \"1\": expected true or false"),
        ("BOGUS_HELO_MILTER_DOMAINS", "x", "BOGUS_HELO_MILTER_DOMAINS = \"x\": tables ([rules], [domains]) can be set in the configuration file only"),
    ] {
        let r = run("", &["-t"], &[(var, value)]);
        assert_eq!(r.code, 2, "{var}");
        assert!(r.stderr.contains(message), "{var}: {}", r.stderr);
    }
}

#[test]
fn a_named_config_file_must_exist() {
    let out = Command::new(BIN)
        .args(["-t", "-c", "/nonexistent/milter.conf"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "bogus-helo-milter: /nonexistent/milter.conf: no such configuration file\n"
    );
}

#[test]
fn the_milter_refuses_to_start_on_a_bad_config() {
    let r = run("action = \"bounce\"", &[], &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("action = \"bounce\""), "{}", r.stderr);
}

#[test]
fn explain_gives_the_verdict_and_the_reply() {
    let config =
        "whitelist = [\"private@example.com\"]\n[domains.\"example.org\"]\naction = \"tempfail\"\n";
    let r = run(
        config,
        &[
            "explain",
            "--helo",
            "[192.0.2.9]",
            "--rcpt",
            "info@example.com",
            "--client",
            "198.51.100.7",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("rule:      ip (\"bogus helo\")"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("verdict:   reject\nreply:     550 5.7.1 bogus helo\n"),
        "{}",
        r.stdout
    );

    let r = run(
        config,
        &[
            "explain",
            "--helo",
            "[192.0.2.25]",
            "--rcpt",
            "a@example.org",
            "--local",
            "192.0.2.25",
            "--client",
            "198.51.100.7",
        ],
        &[],
    );
    assert!(
        r.stdout
            .contains("reply:     450 4.7.1 bogus helo 192.0.2.25"),
        "{}",
        r.stdout
    );

    let r = run(
        config,
        &[
            "explain",
            "--helo",
            "example.com",
            "--rcpt",
            "private+x@example.com",
            "--client",
            "198.51.100.7",
        ],
        &[],
    );
    assert!(
        r.stdout
            .contains("accept, exempt: the recipient is on the whitelist"),
        "{}",
        r.stdout
    );

    let r = run(
        config,
        &[
            "explain",
            "--helo",
            "mail.example.net",
            "--rcpt",
            "a@example.com",
        ],
        &[],
    );
    assert!(r.stdout.contains("rule:      none"), "{}", r.stdout);
    assert!(r.stdout.contains("verdict:   accept\n"), "{}", r.stdout);

    let r = run(
        config,
        &[
            "explain",
            "--helo",
            "[192.0.2.9]",
            "--rcpt",
            "a@example.com",
            "--client",
            "198.51.100.7",
            "--auth",
            "alice",
        ],
        &[],
    );
    assert!(
        r.stdout.contains("exempt: the client authenticated"),
        "{}",
        r.stdout
    );
}

#[test]
fn version() {
    let out = Command::new(BIN).arg("-V").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("bogus-helo-milter {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_example_config_documents_the_defaults() {
    let example =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/milter.conf.example")).unwrap();
    let from_example = run(&example, &["-t"], &[]);
    let from_nothing = run("", &["-t"], &[]);
    assert_eq!(from_example.code, 0, "{}", from_example.stderr);
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&from_example.stdout), body(&from_nothing.stdout));
    // Every key of the file format appears in the example.
    for line in from_nothing
        .stdout
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let key = line.split(" = ").next().unwrap();
        assert!(
            example.contains(&format!("\n{key} = ")),
            "{key} is not documented"
        );
    }
    assert!(example.contains("[domains.\"example.com\"]"));
}

#[test]
fn a_world_writable_config_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("milter.conf");
    fs::write(&path, "action = \"log\"\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    let out = Command::new(BIN)
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("writable by every user; refusing it (chmod o-w"),
        "{stderr}"
    );
    fs::set_permissions(&path, fs::Permissions::from_mode(0o664)).unwrap();
    let out = Command::new(BIN)
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn unix_socket_settings_are_checked() {
    let r = run("socket_mode = \"0999\"", &["-t"], &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("FILE: socket_mode = \"0999\": expected an octal file mode"),
        "{}",
        r.stderr
    );
    let r = run("socket_group = \"no-such-group-here\"", &["-t"], &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("FILE: socket_group = \"no-such-group-here\": no such group"),
        "{}",
        r.stderr
    );
    let r = run(
        "socket = \"unix:/run/x.sock\"\nsocket_mode = \"660\"\nsocket_group = \"mail\"",
        &["-t"],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("socket_mode = \"0660\"\nsocket_group = \"mail\""),
        "{}",
        r.stdout
    );
}

/// What `explain` prints for `helo` and `rcpt` from client 198.51.100.7, which reached
/// 192.0.2.25.
fn explain_with(config: &str, helo: &str, rcpt: &str) -> String {
    let r = run(
        config,
        &[
            "explain",
            "--helo",
            helo,
            "--rcpt",
            rcpt,
            "--client",
            "198.51.100.7",
            "--local",
            "192.0.2.25",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.stdout
}

/// Per-rule actions (issue 14): `explain` names the setting that decided, `-t` prints the
/// effective table, and a rule that does not exist is an error.
#[test]
fn per_rule_actions_are_explained_and_checked() {
    let config = r#"action = "reject"
[rules]
ip = "tempfail"
[domains."example.org"]
action = "log"
[domains."example.org".rules]
own-ip = "reject"
rcpt-domain = "tag"
"#;
    let explain = |helo: &str, rcpt: &str| explain_with(config, helo, rcpt);
    for (helo, rcpt, action, verdict) in [
        ("[192.0.2.9]", "u@example.com", "tempfail (from rules.ip)", "tempfail"),
        ("[192.0.2.9]", "u@example.org", "log (from domains.\"example.org\".action)", "accept, log only"),
        ("[192.0.2.25]", "u@example.org", "reject (from domains.\"example.org\".rules.own-ip)", "reject"),
        ("[192.0.2.25]", "u@example.com", "reject (from action)", "reject"),
        (
            "example.org",
            "u@example.org",
            "tag (from domains.\"example.org\".rules.rcpt-domain)",
            "accept, and tag the message: X-Bogus-HELO: rule=rcpt-domain helo=\"example.org\" client=198.51.100.7",
        ),
    ] {
        let out = explain(helo, rcpt);
        assert!(out.contains(&format!("action:    {action}\n")), "{helo} {rcpt}:\n{out}");
        assert!(out.contains(&format!("verdict:   {verdict}")), "{helo} {rcpt}:\n{out}");
    }

    let r = run(config, &["-t"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for line in [
        "\n[rules]\nip = \"tempfail\"\n",
        "\n[domains.\"example.org\".rules]\nown-ip = \"reject\"\nrcpt-domain = \"tag\"\n",
        "# effective actions          own-ip     ip         rcpt-domain invalid    non-fqdn   unknown    mismatch\n",
        "#   (other domains)            reject     tempfail   reject      off        off        off        off\n",
        "#   example.org                reject     log        tag         off        off        off        off\n",
    ] {
        assert!(r.stdout.contains(line), "{line:?} in:\n{}", r.stdout);
    }

    for (config, message) in [
        (
            "[rules]\nip-literal = \"log\"",
            "FILE: rules.ip-literal = \"log\": no such rule; the rules are own-ip, ip, rcpt-domain, invalid, non-fqdn, unknown or mismatch",
        ),
        (
            "[domains.\"x.example\".rules]\nownip = \"log\"",
            "FILE: domains.\"x.example\".rules.ownip = \"log\": no such rule",
        ),
        ("[rules]\nip = \"bounce\"", "FILE: rules.ip = \"bounce\": expected reject, tempfail, log, tag or off"),
        ("[domains.\"x.example\"]", "FILE: domains.\"x.example\".action = \"\": missing; a [domains] entry needs an action"),
    ] {
        let r = run(config, &["-t"], &[]);
        assert_eq!(r.code, 2, "{config}");
        assert!(r.stderr.contains(message), "{config}: {}", r.stderr);
    }
}

#[test]
fn policy_socket_and_milter_socket_are_checked() {
    let r = run("policy_socket = \"inet:127.0.0.1:8896\"", &["-t"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(
            "socket = \"inet:127.0.0.1:8895\"\npolicy_socket = \"inet:127.0.0.1:8896\"\n"
        ),
        "{}",
        r.stdout
    );
    // Only the policy service: the milter's socket off.
    let r = run(
        "socket = \"\"\npolicy_socket = \"unix:/run/bogus-helo-milter/policy.sock\"",
        &["-t"],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(
            "socket = \"\"\npolicy_socket = \"unix:/run/bogus-helo-milter/policy.sock\"\n"
        ),
        "{}",
        r.stdout
    );
    for (config, expected) in [
        (
            "socket = \"\"",
            "FILE: socket = \"\": the milter's socket and policy_socket are both off",
        ),
        (
            "policy_socket = \"8896\"",
            "FILE: policy_socket = \"8896\": expected inet:HOST:PORT",
        ),
        (
            "policy_socket = \"inet:8896@127.0.0.1\"\nsocket = \"inet:127.0.0.1:8896\"",
            "FILE: policy_socket = \"inet:8896@127.0.0.1\": the same address as socket",
        ),
    ] {
        let r = run(config, &["-t"], &[]);
        assert_eq!(r.code, 2, "{config}");
        assert!(r.stderr.contains(expected), "{config}: {}", r.stderr);
    }
    let r = run(
        "",
        &["-t"],
        &[
            ("BOGUS_HELO_MILTER_SOCKET", ""),
            ("BOGUS_HELO_MILTER_POLICY_SOCKET", "inet:[::1]:8896"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("socket = \"\"\npolicy_socket = \"inet:[::1]:8896\"\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn metrics_listen_is_checked() {
    let r = run("metrics_listen = \"[::1]:9465\"", &["-t"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("\nmetrics_listen = \"[::1]:9465\"\n"),
        "{}",
        r.stdout
    );
    let r = run("", &["-t"], &[]);
    assert!(
        r.stdout.contains("\nmetrics_listen = \"\"\n"),
        "{}",
        r.stdout
    );
    let r = run(
        "metrics_listen = \"[::1]:9465\"",
        &["-t"],
        &[("BOGUS_HELO_MILTER_METRICS_LISTEN", "127.0.0.1:19465")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("\nmetrics_listen = \"127.0.0.1:19465\"\n"),
        "{}",
        r.stdout
    );
    for (value, expected) in [
        ("localhost:9465", "\"localhost\" is not an IP address"),
        ("127.0.0.1", "missing port"),
        ("127.0.0.1:0", "port 0"),
        (
            "::1",
            "an IPv6 address goes in brackets, followed by a port: \"[::1]:9465\"",
        ),
        ("inet:127.0.0.1:9465", "without a prefix"),
        (
            "127.0.0.1:8895",
            "the same address as socket or policy_socket",
        ),
    ] {
        let r = run(&format!("metrics_listen = \"{value}\""), &["-t"], &[]);
        assert_eq!(r.code, 2, "{value}");
        let head = format!("FILE: metrics_listen = \"{value}\": ");
        assert!(
            r.stderr.contains(&head) && r.stderr.contains(expected),
            "{value}: {}",
            r.stderr
        );
    }
    let r = run(
        "",
        &["-t"],
        &[("BOGUS_HELO_MILTER_METRICS_LISTEN", "metrics.example:9465")],
    );
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains(
            "FILE with BOGUS_HELO_MILTER_METRICS_LISTEN: metrics_listen = \"metrics.example:9465\": \"metrics.example\" is not an IP address"
        ),
        "{}",
        r.stderr
    );
}

/// `reload PID` with the binary at `bin` and the config at `conf`.
fn reload_with(bin: &std::path::Path, conf: &std::path::Path, pid: u32) -> Run {
    let mut command = Command::new(bin);
    command
        .arg("-c")
        .arg(conf)
        .args(["reload", &pid.to_string()])
        .env_remove("RUST_LOG");
    let out = common::exec_retrying(&mut command, Command::output).unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Issue 19 item 3: `reload PID` signals only this milter; another process is left alone
/// with an error naming it and exit status 3, which a bad config (2) does not share.
#[test]
fn reload_signals_only_this_milter() {
    use nix::sys::signal::{kill, Signal};
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.conf");
    fs::write(&good, "action = \"log\"\n").unwrap();
    let bad = dir.path().join("bad.conf");
    fs::write(&bad, "action = \"bounce\"\n").unwrap();

    for conf in [&good, &bad] {
        let mut sleep = Command::new("sleep").arg("300").spawn().unwrap();
        let r = reload_with(std::path::Path::new(BIN), conf, sleep.id());
        assert_eq!(r.code, 3, "{}", r.stderr);
        assert!(
            r.stderr.contains(&format!(
                "reload: process {} is not bogus-helo-milter",
                sleep.id()
            )) && r.stderr.contains("sleep"),
            "{}",
            r.stderr
        );
        // Had reload sent SIGHUP, it would be pending or delivered by now, and delivered
        // before our SIGTERM (the lower signal first): sleep must die of SIGTERM.
        kill(
            nix::unistd::Pid::from_raw(sleep.id() as i32),
            Signal::SIGTERM,
        )
        .unwrap();
        let status = sleep.wait().unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32), "{status:?}");
    }

    // A PID above the kernel's pid_max belongs to no process.
    let pid_max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let r = reload_with(std::path::Path::new(BIN), &good, pid_max + 1);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("process {} does not exist", pid_max + 1)),
        "{}",
        r.stderr
    );
}

/// Issue 19 items 3 and 5: a real milter is reloaded, with the binary it runs and with the
/// file that replaced that binary under it (an upgrade: `dpkg` renames the new file over
/// the old, and systemd's `ExecReload` runs the new one against the old process). A bad
/// file exits 2 and still reaches the milter, which logs the failure and keeps its config.
#[test]
fn reload_reaches_this_milter_also_after_an_upgrade() {
    use common::milter::Milter;
    use std::time::Duration;
    const WAIT: Duration = Duration::from_secs(20);
    let dir = tempfile::tempdir().unwrap();
    let installed = dir.path().join("bogus-helo-milter");
    fs::copy(BIN, &installed).unwrap();
    let milter = Milter::start_from(&installed, "action = \"log\"\n", false);
    let pid = milter.pid().as_raw() as u32;
    let conf = milter.config_path();

    let r = reload_with(&installed, &conf, pid);
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));
    assert!(
        milter.wait_for(WAIT, |log| log.matches("event=reload result=ok").count()
            == 1)
    );

    let new = dir.path().join("bogus-helo-milter.dpkg-new");
    fs::copy(BIN, &new).unwrap();
    fs::rename(&new, &installed).unwrap();
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, dir.path().join("bogus-helo-milter (deleted)"));
    let r = reload_with(&installed, &conf, pid);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    assert!(
        milter.wait_for(WAIT, |log| log.matches("event=reload result=ok").count()
            == 2)
    );

    // Another binary at another path is not this milter.
    let elsewhere = dir.path().join("other-milter");
    fs::copy(BIN, &elsewhere).unwrap();
    let r = reload_with(&elsewhere, &conf, pid);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("(deleted)"), "{}", r.stderr);

    milter.write_config("action = \"bounce\"\n");
    let r = reload_with(&installed, &conf, pid);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("action = \"bounce\""), "{}", r.stderr);
    assert!(milter.wait_for_log("event=reload result=failed keeping=previous", WAIT));
    assert!(milter.stop());
}

/// Issue 19 item 10: a reload names `socket_mode` and `socket_group` as restart-only only
/// when a unix socket is in use; with TCP sockets they change nothing.
#[test]
fn reload_names_socket_mode_only_for_unix_sockets() {
    use common::milter::Milter;
    const RESTART: &str = "event=reload restart_needed=";
    let restart_lines = |milter: &Milter| -> Vec<String> {
        milter
            .log()
            .lines()
            .filter(|l| l.contains(RESTART))
            .map(|l| l.split(RESTART).nth(1).unwrap_or("").to_string())
            .collect()
    };
    let tcp = Milter::start("");
    tcp.write_config("socket_mode = \"0600\"\nsocket_group = \"root\"\n");
    // The warning is logged before the result line that `reload` waits for.
    assert!(tcp.reload().contains("result=ok"));
    tcp.write_config("socket_mode = \"0640\"\nidle_timeout = \"5min\"\n");
    assert!(tcp.reload().contains("result=ok"));
    assert_eq!(
        restart_lines(&tcp),
        ["idle_timeout these keys changed and take effect only at restart"],
        "{}",
        tcp.log()
    );
    assert!(tcp.stop());

    let unix = Milter::start_unix("");
    unix.write_config("socket_mode = \"0600\"\nsocket_group = \"root\"\n");
    assert!(unix.reload().contains("result=ok"));
    assert_eq!(
        restart_lines(&unix),
        ["socket_mode,socket_group these keys changed and take effect only at restart"],
        "{}",
        unix.log()
    );
    assert!(unix.stop());
}

/// `-t` in a UTS namespace of its own whose host name is `host` (the tests run as root).
fn check_with_host_name(config: &str, host: &'static str, quiet: bool) -> Run {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("milter.conf");
    fs::write(&path, config).unwrap();
    let mut command = Command::new(BIN);
    command.arg("-c").arg(&path).arg("-t");
    if quiet {
        command.arg("-q");
    }
    // SAFETY: between fork and exec only the two system calls, which allocate nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS)?;
            nix::unistd::sethostname(host)?;
            Ok(())
        });
    }
    let out = command.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Issue 19 item 10: with the policy service on, a host name that is not fully qualified
/// and no own_names, the policy path knows no own name where the milter knows Postfix's
/// myhostname: `-t` says so.
#[test]
#[ignore = "needs root (a UTS namespace of its own); CI runs it with --include-ignored"]
fn check_warns_when_the_policy_service_knows_no_own_name() {
    const POLICY: &str = "policy_socket = \"inet:127.0.0.1:8896\"\n";
    let r = check_with_host_name(POLICY, "mx", false);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        "bogus-helo-milter: warning: policy_host_name=\"\" own_names=[] this host's name \"mx\" \
         is not fully qualified and Postfix does not send the policy service its myhostname, so \
         the policy service knows no own name for the rcpt-domain rule where the milter knows \
         myhostname; add Postfix's myhostname (postconf -h myhostname) to own_names\n"
    );
    assert!(r.stdout.contains("policy_socket = \"inet:127.0.0.1:8896\""));
    for (config, host, quiet) in [
        // A fully qualified host name is the policy service's own name.
        (POLICY.to_string(), "mx.example.com", false),
        // own_names may hold myhostname.
        (
            format!("{POLICY}own_names = [\"mx.example.com\"]\n"),
            "mx",
            false,
        ),
        // Without the policy service only the milter judges, and it has myhostname.
        (String::new(), "mx", false),
        // -q prints errors only.
        (POLICY.to_string(), "mx", true),
    ] {
        let r = check_with_host_name(&config, host, quiet);
        assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{config} on {host}");
    }
}

/// `own_interfaces = false` (or its environment variable) leaves the interface addresses
/// out of the own addresses: 127.0.0.1, on every host's loopback interface, is then only
/// an IP address; `-t` says which way it is.
#[test]
fn own_interfaces_false_leaves_the_interfaces_out() {
    let args = [
        "explain",
        "--helo",
        "[127.0.0.1]",
        "--rcpt",
        "u@example.com",
        "--client",
        "198.51.100.7",
    ];
    let on = run("", &args, &[]);
    assert!(
        on.stdout
            .contains("reply:     550 5.7.1 bogus helo 127.0.0.1\n"),
        "{}",
        on.stdout
    );
    for (config, env) in [
        ("own_interfaces = false\n", &[][..]),
        ("", &[("BOGUS_HELO_MILTER_OWN_INTERFACES", "false")][..]),
    ] {
        let off = run(config, &args, env);
        assert!(
            off.stdout.contains("reply:     550 5.7.1 bogus helo\n"),
            "{config:?} {env:?}: {}",
            off.stdout
        );
        let check = run(config, &["-t"], env);
        assert!(
            check.stdout.contains("\nown_interfaces = false\n")
                && check.stdout.contains("# none (own_interfaces = false)\n"),
            "{}",
            check.stdout
        );
    }
    let bad = run("own_interfaces = \"no\"\n", &["-t"], &[]);
    assert_eq!(bad.code, 2, "{}", bad.stdout);
    assert!(bad.stderr.contains("own_interfaces"), "{}", bad.stderr);
}

/// The opt-in rules (issue 21): `explain` names the setting that turned one on, or says it
/// is off by default; `-t` shows them in the effective table, off until a rule key names
/// them, whatever `action` says.
#[test]
fn invalid_and_non_fqdn_are_explained_and_shown() {
    let config = r#"action = "reject"
[rules]
invalid = "tempfail"
[domains."example.org"]
action = "log"
[domains."example.org".rules]
non-fqdn = "reject"
[domains."off.example"]
action = "off"
"#;
    let explain = |helo: &str, rcpt: &str| explain_with(config, helo, rcpt);
    for (helo, rcpt, lines) in [
        (
            "exa_mple.com",
            "u@example.com",
            &[
                "rule:      invalid (\"bogus helo invalid name\"): ",
                "action:    tempfail (from rules.invalid)\n",
                "reply:     450 4.7.1 bogus helo invalid name\n",
            ][..],
        ),
        (
            "exa_mple.com",
            "u@example.org",
            &["action:    tempfail (from rules.invalid)\n"][..],
        ),
        (
            "DESKTOP-4F2K",
            "u@example.org",
            &[
                "rule:      non-fqdn (\"bogus helo not fully qualified\"): ",
                "action:    reject (from domains.\"example.org\".rules.non-fqdn)\n",
                "reply:     550 5.7.1 bogus helo not fully qualified\n",
            ][..],
        ),
        (
            "DESKTOP-4F2K",
            "u@example.com",
            &[
                "(non-fqdn would match, but is off: the default (off until a rule key names it))\n",
                "verdict:   accept\n",
            ][..],
        ),
        (
            "exa_mple.com",
            "u@off.example",
            &[
                "action:    off (from domains.\"off.example\".action)\n",
                "verdict:   accept, exempt: the action for this rule and recipient is off\n",
            ][..],
        ),
        (
            "[192.0.2.9",
            "u@example.com",
            &["reply:     450 4.7.1 bogus helo invalid name\n"][..],
        ),
        (
            "mail.example.net",
            "u@example.com",
            &["rule:      none", "verdict:   accept\n"][..],
        ),
    ] {
        let out = explain(helo, rcpt);
        for line in lines {
            assert!(out.contains(line), "{helo} {rcpt}: {line:?} in:\n{out}");
        }
    }
    assert!(!explain("mail.example.net", "u@example.com").contains("would match"));

    let r = run(config, &["-t"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for line in [
        "\n[rules]\ninvalid = \"tempfail\"\n",
        "\n[domains.\"example.org\".rules]\nnon-fqdn = \"reject\"\n",
        "#   (other domains)            reject     reject     reject      tempfail   off        off        off\n",
        "#   example.org                log        log        log         tempfail   reject     off        off\n",
        "#   off.example                off        off        off         off        off        off        off\n",
        "non-fqdn the default (off until a rule key names it)",
        "invalid domains.\"off.example\".action",
    ] {
        assert!(r.stdout.contains(line), "{line:?} in:\n{}", r.stdout);
    }
}

#[test]
fn dns_servers_and_dns_timeout_are_checked_and_shown() {
    let r = run("", &["-t"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("\ndns_servers = []\ndns_timeout = \"2s\"\n"),
        "{}",
        r.stdout
    );
    let r = run(
        "dns_servers = [\"192.0.2.53\", \"127.0.0.1:5353\", \"[2001:db8::53]:54\", \"2001:db8::1\", \"[::ffff:192.0.2.9]:53\"]\ndns_timeout = \"500ms\"",
        &["-t"],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(
            "\ndns_servers = [\"192.0.2.53:53\", \"127.0.0.1:5353\", \"[2001:db8::53]:54\", \"[2001:db8::1]:53\", \"192.0.2.9:53\"]\ndns_timeout = \"500ms\"\n"
        ),
        "{}",
        r.stdout
    );
    let r = run(
        "dns_servers = [\"192.0.2.53\"]",
        &["-t"],
        &[("BOGUS_HELO_MILTER_DNS_SERVERS", "127.0.0.1:5353, [::1]")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("\ndns_servers = [\"127.0.0.1:5353\", \"[::1]:53\"]\n"),
        "{}",
        r.stdout
    );
    let address = "expected a DNS server's address, with a port or not";
    for (key, value, expected) in [
        ("dns_servers", "ns.example", address),
        ("dns_servers", "[::1]:", address),
        ("dns_servers", "192.0.2.53:99999", address),
        ("dns_servers", "udp://192.0.2.53", address),
        ("dns_servers", "192.0.2.53:0", "port 0 is no server's"),
        ("dns_servers", "0.0.0.0", "an unspecified address"),
        ("dns_timeout", "50ms", "must be from 100ms to 20s"),
        ("dns_timeout", "1min", "must be from 100ms to 20s"),
        ("dns_timeout", "2", "expected a duration such as \"2s\""),
    ] {
        let text = match key {
            "dns_servers" => format!("dns_servers = [\"{value}\"]"),
            _ => format!("{key} = \"{value}\""),
        };
        let r = run(&text, &["-t"], &[]);
        assert_eq!(r.code, 2, "{value}");
        let head = format!("FILE: {key} = \"{value}\": ");
        assert!(
            r.stderr.contains(&head) && r.stderr.contains(expected),
            "{value}: {}",
            r.stderr
        );
    }
    let r = run(
        "dns_servers = [\"192.0.2.53\", \"192.0.2.53:53\"]",
        &["-t"],
        &[],
    );
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains(
            "FILE: dns_servers = \"192.0.2.53:53\": the same as the entry \"192.0.2.53\""
        ),
        "{}",
        r.stderr
    );
}

/// The DNS rules' settings: `mismatch` is never refused (RFC 5321 §4.1.4), `dns_failure`
/// is accept or tempfail, and `-t` shows them.
#[test]
fn dns_rule_settings_are_checked_and_shown() {
    let rfc = "mismatch can only log, tag or be off: RFC 5321 §4.1.4 says a server MUST NOT refuse mail because the HELO does not match the client's address";
    for (config, key, value) in [
        ("[rules]\nmismatch = \"reject\"", "rules.mismatch", "reject"),
        (
            "[rules]\nmismatch = \"Tempfail\"",
            "rules.mismatch",
            "Tempfail",
        ),
        (
            "[domains.\"x.example\".rules]\nmismatch = \"tempfail\"",
            "domains.\"x.example\".rules.mismatch",
            "tempfail",
        ),
    ] {
        let r = run(config, &["-t"], &[]);
        assert_eq!(r.code, 2, "{config}");
        let message = format!("FILE: {key} = \"{value}\": {rfc}");
        assert!(r.stderr.contains(&message), "{message:?} in: {}", r.stderr);
    }
    for value in ["defer", "reject", ""] {
        let r = run(&format!("dns_failure = \"{value}\""), &["-t"], &[]);
        assert_eq!(r.code, 2, "{value}");
        let message = format!("FILE: dns_failure = \"{value}\": expected accept or tempfail");
        assert!(r.stderr.contains(&message), "{message:?} in: {}", r.stderr);
    }
    let r = run("dns_failure = 1", &["-t"], &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("FILE: dns_failure: "), "{}", r.stderr);

    let r = run("", &["-t"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("\ndns_failure = \"accept\"\n"),
        "{}",
        r.stdout
    );
    let config = "dns_failure = \"TEMPFAIL\"\n[rules]\nunknown = \"reject\"\nmismatch = \"tag\"\n[domains.\"example.org\"]\naction = \"off\"\n[domains.\"example.net\".rules]\nmismatch = \"log\"\n";
    let r = run(config, &["-t"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for line in [
        "\n# DNS, for the rules unknown and mismatch\ndns_failure = \"tempfail\"\n",
        "\n[rules]\nunknown = \"reject\"\nmismatch = \"tag\"\n",
        "#   (other domains)            reject     reject     reject      off        off        reject     tag\n",
        "#   example.net                reject     reject     reject      off        off        reject     log\n",
        "#   example.org                off        off        off         off        off        off        off\n",
        "mismatch domains.\"example.net\".rules.mismatch",
    ] {
        assert!(r.stdout.contains(line), "{line:?} in:\n{}", r.stdout);
    }
    // The same through the environment.
    let r = run(
        "",
        &["-t"],
        &[("BOGUS_HELO_MILTER_DNS_FAILURE", "tempfail")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("\ndns_failure = \"tempfail\"\n"),
        "{}",
        r.stdout
    );
}
