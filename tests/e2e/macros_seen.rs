//! What each MTA tells a milter, and when: a recording milter (indymilter) behind the
//! private MTA, asking for the macros that bogus-helo-milter asks for (learnt by
//! negotiating with the real binary, not copied from it), and a session with two EHLOs,
//! two recipients and a message, then one without any HELO. The test prints the record
//! and checks the facts the milter relies on, written by hand from the field notes and
//! README: `j` and `{daemon_addr}` at connect, `{auth_authen}` at the MAIL after AUTH
//! (Postfix, with Cyrus SASL's ANONYMOUS), the queue id `i` after the first RCPT. The test
//! beds set no `milter_*_macros`: what arrives is what the milter asked for.

use crate::{
    bed::ProbeMilter,
    common::{
        milter::Milter,
        mta::{Kind, Mta},
        smtp::{Client, Reply},
    },
};
use indymilter::{Callbacks, Context, MacroStage, SocketInfo, Status};
use std::{
    collections::BTreeMap,
    ffi::CString,
    sync::{Arc, Mutex},
    time::Duration,
};

/// The macros the real bogus-helo-milter asks for at negotiation, per stage.
fn requested_by_the_milter() -> Vec<(MacroStage, CString)> {
    let milter = Milter::start("");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let conn = indymilter_test::TestConnection::open(milter.addr())
            .await
            .expect("negotiate with the milter");
        let requested = conn
            .requested_macros()
            .iter()
            .map(|(stage, names)| (*stage, names.clone()))
            .collect();
        let _ = conn.close().await;
        requested
    })
}

#[derive(Clone, Debug)]
struct Event {
    /// `connect`, `helo`, ... for milter callbacks; `client` for a client step marker.
    stage: String,
    arg: String,
    macros: BTreeMap<String, String>,
}

type Record = Arc<Mutex<Vec<Event>>>;

fn push(record: &Record, stage: &str, arg: String, macros: BTreeMap<String, String>) {
    record.lock().unwrap().push(Event {
        stage: stage.into(),
        arg,
        macros,
    });
}

fn macros_of<T: Send>(cx: &Context<T>) -> BTreeMap<String, String> {
    cx.macros
        .to_hash_map()
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

fn recorder(record: Record, requested: Vec<(MacroStage, CString)>) -> Callbacks<()> {
    let (r1, r2, r3, r4, r5, r6) = (
        record.clone(),
        record.clone(),
        record.clone(),
        record.clone(),
        record.clone(),
        record,
    );
    Callbacks::new()
        .on_negotiate(move |cx, _, _| {
            let requested = requested.clone();
            Box::pin(async move {
                for (stage, names) in requested {
                    cx.requested_macros.insert(stage, names);
                }
                Status::Continue
            })
        })
        .on_connect(move |cx, host, info| {
            let r = r1.clone();
            Box::pin(async move {
                let addr = match info {
                    SocketInfo::Inet(a) => a.to_string(),
                    SocketInfo::Unix(p) => format!("unix:{}", p.to_string_lossy()),
                    SocketInfo::Unknown => "unknown".into(),
                };
                push(
                    &r,
                    "connect",
                    format!("{} {addr}", host.to_string_lossy()),
                    macros_of(cx),
                );
                Status::Continue
            })
        })
        .on_helo(move |cx, name| {
            let r = r2.clone();
            Box::pin(async move {
                push(
                    &r,
                    "helo",
                    name.to_string_lossy().into_owned(),
                    macros_of(cx),
                );
                Status::Continue
            })
        })
        .on_mail(move |cx, args| {
            let r = r3.clone();
            Box::pin(async move {
                push(&r, "mail", join(&args), macros_of(cx));
                Status::Continue
            })
        })
        .on_rcpt(move |cx, args| {
            let r = r4.clone();
            Box::pin(async move {
                push(&r, "rcpt", join(&args), macros_of(cx));
                Status::Continue
            })
        })
        .on_eom(move |cx| {
            let r = r5.clone();
            Box::pin(async move {
                let macros = cx
                    .macros
                    .to_hash_map()
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k.to_string_lossy().into_owned(),
                            v.to_string_lossy().into_owned(),
                        )
                    })
                    .collect();
                push(&r, "eom", String::new(), macros);
                Status::Continue
            })
        })
        .on_close(move |cx| {
            let r = r6.clone();
            Box::pin(async move {
                push(&r, "close", String::new(), macros_of(cx));
                Status::Continue
            })
        })
}

fn join(args: &[CString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn macros_and_helo_calls(kind: Kind) {
    let record: Record = Arc::default();
    let requested = requested_by_the_milter();
    let probe = ProbeMilter::start(recorder(record.clone(), requested));
    let rt = &probe.rt;
    // Postfix with SMTP AUTH (Cyrus SASL's ANONYMOUS mechanism, which needs no user
    // database), so that {auth_authen} can be seen; the Sendmail bed offers no AUTH.
    let sasl = tempfile::tempdir().expect("temp dir");
    let mta = match kind {
        Kind::Postfix => {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(sasl.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
            std::fs::write(sasl.path().join("smtpd.conf"), "mech_list: ANONYMOUS\n")
                .expect("write smtpd.conf");
            Mta::start_postfix_with(
                Some(&format!("inet:{}", probe.addr)),
                &format!(
                    "smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = cyrus\n\
                     smtpd_sasl_path = smtpd\ncyrus_sasl_config_path = {}\n\
                     smtpd_sasl_security_options =\n",
                    sasl.path().display()
                ),
            )
        }
        Kind::Sendmail => Mta::start(kind, probe.addr),
    };

    let mark = |what: &str| push(&record, "client", what.into(), BTreeMap::new());
    let step = |client: &mut Client, command: &str| -> Reply {
        let reply = rt.block_on(client.command(command)).expect("SMTP command");
        mark(&format!("{command} -> {}", reply.line()));
        reply
    };

    // Session 1: two EHLOs, two recipients, a message.
    let (mut client, greeting) = rt.block_on(Client::connect(mta.addr())).expect("connect");
    mark(&format!("connect -> {}", greeting.line()));
    step(&mut client, "EHLO first.example.net");
    step(&mut client, "EHLO second.example.net");
    step(&mut client, "MAIL FROM:<sender@example.net>");
    step(&mut client, "RCPT TO:<one@example.com>");
    step(&mut client, "RCPT TO:<two@example.org>");
    let data = rt
        .block_on(client.data("Subject: macros\n\nHello.\n"))
        .expect("DATA");
    mark(&format!("DATA -> {}", data.line()));
    let _ = rt.block_on(client.quit());
    mark("QUIT");
    // Session 2: no HELO at all.
    let (mut client, greeting) = rt.block_on(Client::connect(mta.addr())).expect("connect");
    mark(&format!("connect -> {}", greeting.line()));
    let mail = step(&mut client, "MAIL FROM:<sender@example.net>");
    if mail.code == 250 {
        step(&mut client, "RCPT TO:<one@example.com>");
        step(&mut client, "RSET");
    }
    let _ = rt.block_on(client.quit());
    mark("QUIT");
    let mut sessions = 2;
    if kind == Kind::Postfix {
        // Session 3: AUTH, then a message.
        let (mut client, greeting) = rt.block_on(Client::connect(mta.addr())).expect("connect");
        mark(&format!("connect -> {}", greeting.line()));
        step(&mut client, "EHLO third.example.net");
        let auth = step(&mut client, "AUTH ANONYMOUS dHJhY2U=");
        assert_eq!(auth.code, 235, "{kind}: AUTH refused: {}", auth.line());
        step(&mut client, "MAIL FROM:<sender@example.net>");
        let _ = rt.block_on(client.quit());
        mark("QUIT");
        sessions = 3;
    }
    // The MTA has finished with the milter once both sessions are closed.
    let closed = || {
        record
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.stage == "close")
            .count()
    };
    assert!(
        crate::common::wait_until(Duration::from_secs(10), || closed() >= sessions),
        "{kind}: the MTA did not close every milter session"
    );

    let events = record.lock().unwrap().clone();
    let mut seen = BTreeMap::new();
    println!("[{kind}] what the milter was told (macros as defined at each callback):");
    for e in &events {
        if e.stage == "client" {
            println!("[{kind}]   client: {}", e.arg);
            continue;
        }
        let macros: Vec<String> = e
            .macros
            .iter()
            .filter(|(k, v)| seen.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for (k, v) in &e.macros {
            seen.insert(k.clone(), v.clone());
        }
        println!(
            "[{kind}]   milter {} {:?} new/changed macros: {}",
            e.stage,
            e.arg,
            macros.join(" ")
        );
    }

    let mut problems = Vec::new();
    let connect = events.iter().find(|e| e.stage == "connect");
    let first_rcpt = events.iter().find(|e| e.stage == "rcpt");
    let second_rcpt = events.iter().filter(|e| e.stage == "rcpt").nth(1);
    let helos: Vec<&str> = events
        .iter()
        .filter(|e| e.stage == "helo")
        .map(|e| e.arg.as_str())
        .collect();
    match connect {
        Some(c) => {
            for m in ["j", "{daemon_addr}"] {
                if !c.macros.contains_key(m) {
                    problems.push(format!("no {m} at connect"));
                }
            }
            // Postfix never sends {if_addr}; Sendmail leaves it undefined for an interface
            // in the loopback net (its documentation says so), and the tests are on loopback.
            if c.macros.contains_key("{if_addr}") {
                problems.push(format!("{kind} sent {{if_addr}} for a loopback connection"));
            }
            if c.macros.get("j").map(String::as_str) != Some(kind.hostname()) {
                problems.push(format!(
                    "j is {:?}, not {}",
                    c.macros.get("j"),
                    kind.hostname()
                ));
            }
        }
        None => problems.push("no connect callback".into()),
    }
    // Both EHLOs of session 1 in order, none in session 2, session 3's.
    let expected_helos = match kind {
        Kind::Postfix => &[
            "first.example.net",
            "second.example.net",
            "third.example.net",
        ][..],
        Kind::Sendmail => &["first.example.net", "second.example.net"][..],
    };
    if helos != expected_helos {
        problems.push(format!(
            "HELO callbacks {helos:?}, expected every EHLO in order {expected_helos:?}"
        ));
    }
    if first_rcpt.is_none() || !second_rcpt.is_some_and(|r| r.macros.contains_key("i")) {
        problems.push("no queue id (i) at the second RCPT".into());
    }
    // Only the MAIL after AUTH carries who logged in; the others do not.
    let mails: Vec<&Event> = events.iter().filter(|e| e.stage == "mail").collect();
    let authenticated: Vec<bool> = mails
        .iter()
        .map(|m| m.macros.get("{auth_authen}").is_some_and(|v| !v.is_empty()))
        .collect();
    let expected = match kind {
        Kind::Postfix => vec![false, false, true],
        Kind::Sendmail => vec![false, false],
    };
    if authenticated != expected {
        problems.push(format!(
            "{{auth_authen}} at the MAILs {authenticated:?}, expected {expected:?}"
        ));
    }

    drop(mta);
    drop(probe);
    assert!(problems.is_empty(), "{kind}: {problems:#?}");
}
