//! The milter callbacks: they gather the facts of each SMTP session, have them judged at
//! RCPT (`judgement`), and turn the outcome into the milter's reply or header.

use crate::{
    dns::session::{self as dns_session, Asked},
    domain,
    helo::{parse_macro_ip, Helo},
    judgement::{Facts, Outcome},
    logging::quote,
    recipient::Recipient,
    ruleset::RuleSet,
    shared::{LiveSession, Shared},
    stats::{FrontEnd, SessionError},
    verdict::{Connection, TagHeader},
};
use indymilter::{
    Actions as MtaActions, Callbacks, Context, ContextActions, EomContext, MacroStage, Macros,
    NegotiateContext, ProtoOpts, SessionErrorKind, SetErrorReply, SocketInfo, Status,
};
use log::{error, info, warn};
use std::{
    ffi::{CStr, CString},
    sync::Arc,
    time::Instant,
};

/// One SMTP session, as seen through one milter connection.
pub(crate) struct Session {
    /// Taken at the start: a reload applies from the next connection on.
    ruleset: Arc<RuleSet>,
    conn: Connection,
    /// The HELO as the peer sent it, for the log.
    helo_text: String,
    /// The stages for which the MTA agreed to expect no reply.
    no_reply: ProtoOpts,
    /// The `X-Bogus-HELO` value for this message, once a recipient was tagged.
    tag: Option<String>,
    /// Whether this session may add and remove headers: some setting tags and the MTA
    /// offered both. Where a setting tags but this is false, `tag` acts as `log`.
    header_changes: bool,
    /// The incoming headers of our name in this message (indices 1 to this, as the MTA
    /// counts them), which `eom` removes.
    forged: i32,
    /// The DNS lookups about the latest HELO name, started when it arrived.
    dns: Option<Asked>,
    _live: LiveSession,
}

/// What every stage before RCPT answers: nothing at all where the MTA agreed to that.
fn go_on(data: &Option<Session>, stage: ProtoOpts) -> Status {
    match data {
        Some(session) if session.no_reply.contains(stage) => Status::Noreply,
        _ => Status::Continue,
    }
}

const CONNECT_MACROS: &str = "j {daemon_addr} {if_addr}";
const MAIL_MACROS: &str = "{auth_authen}";
const RCPT_MACROS: &str = "i";

pub(crate) fn callbacks(shared: Arc<Shared>) -> Callbacks<Session> {
    let negotiate_shared = shared.clone();
    let error_shared = shared.clone();
    let eom_shared = shared.clone();
    let waited_shared = shared.clone();
    let helo_shared = shared.clone();
    Callbacks::new()
        .on_negotiate(move |cx, mta_actions, mta_opts| {
            Box::pin(negotiate(
                cx,
                mta_actions,
                mta_opts,
                negotiate_shared.clone(),
            ))
        })
        .on_connect(|cx, _, socket| Box::pin(connect(cx, socket)))
        .on_helo(move |cx, helo| Box::pin(helo_cb(cx, helo, helo_shared.clone())))
        .on_mail(|cx, _| Box::pin(mail(cx)))
        .on_rcpt(move |cx, args| Box::pin(rcpt(cx, args, shared.clone())))
        // Asked for only where this session may change headers (NO_HEADER otherwise).
        .on_header(|cx, name, _| Box::pin(header(cx, name)))
        .on_eom(move |cx| Box::pin(eom(cx, eom_shared.clone())))
        .on_abort(|cx| Box::pin(end_message(&mut cx.data)))
        .on_close(|cx| Box::pin(close(cx)))
        // indymilter has logged it (`event=session_error`, patches/README.md).
        .on_session_error(move |kind| {
            let reason = match kind {
                SessionErrorKind::Protocol => SessionError::Protocol,
                SessionErrorKind::Oversized => SessionError::Oversized,
                SessionErrorKind::Timeout => SessionError::Timeout,
                SessionErrorKind::Io => SessionError::Io,
            };
            error_shared.stats.session_error(FrontEnd::Milter, reason);
        })
        // The patched indymilter's too (patches/README.md).
        .on_connection_waited(move || waited_shared.stats.connection_waited(FrontEnd::Milter))
}

async fn negotiate(
    cx: &mut NegotiateContext<Session>,
    mta_actions: MtaActions,
    mta_opts: ProtoOpts,
    shared: Arc<Shared>,
) -> Status {
    // Only RCPT needs an answer; connect, HELO, MAIL and the headers always go on, so the
    // MTA need not wait for them (a round trip each).
    let no_reply = mta_opts
        & (ProtoOpts::NOREPLY_CONNECT
            | ProtoOpts::NOREPLY_HELO
            | ProtoOpts::NOREPLY_MAIL
            | ProtoOpts::NOREPLY_HEADER);
    cx.requested_opts |= no_reply;
    for (stage, names) in [
        (MacroStage::Connect, CONNECT_MACROS),
        (MacroStage::Mail, MAIL_MACROS),
        (MacroStage::Rcpt, RCPT_MACROS),
    ] {
        if let Ok(names) = CString::new(names) {
            cx.requested_macros.insert(stage, names);
        }
    }
    let ruleset = shared.ruleset();
    // Message changes are asked for only where some setting tags (indymilter's default
    // asks for everything the MTA offers): adding our header, and removing the ones a
    // sender forged, which needs the headers.
    let wanted = MtaActions::ADD_HEADER | MtaActions::CHANGE_HEADER;
    let header_changes = ruleset.uses_tag() && mta_actions.contains(wanted);
    if header_changes {
        cx.requested_actions = wanted;
    } else {
        cx.requested_actions = MtaActions::empty();
        cx.requested_opts |= ProtoOpts::NO_HEADER;
        if ruleset.uses_tag() {
            // Refusing the session instead would send all mail to the MTA's default
            // action: tag acts as log here, and says so once.
            shared.stats.tag_unavailable(FrontEnd::Milter);
            warn!(
                "event=negotiate tag=log reason=\"the MTA does not offer header changes\" missing={:?} via=milter",
                missing_actions(mta_actions & wanted)
            );
        }
    }
    // Ask only for what is offered: an option the MTA lacks fails the negotiation.
    cx.requested_opts &= mta_opts;
    cx.data = Some(Session {
        ruleset,
        conn: Connection::default(),
        helo_text: String::new(),
        no_reply: cx.requested_opts & no_reply,
        tag: None,
        header_changes,
        forged: 0,
        dns: None,
        _live: LiveSession::new(shared, FrontEnd::Milter),
    });
    Status::Continue
}

/// `add_header,change_header`: the header actions missing from `offered`.
fn missing_actions(offered: MtaActions) -> String {
    [
        (MtaActions::ADD_HEADER, "add_header"),
        (MtaActions::CHANGE_HEADER, "change_header"),
    ]
    .iter()
    .filter(|(action, _)| !offered.contains(*action))
    .map(|(_, name)| *name)
    .collect::<Vec<_>>()
    .join(",")
}

fn macro_str<'a>(macros: &'a Macros, name: &CStr) -> Option<std::borrow::Cow<'a, str>> {
    macros
        .get(name)
        .map(CStr::to_string_lossy)
        .filter(|v| !v.is_empty())
}

async fn connect(cx: &mut Context<Session>, socket: SocketInfo) -> Status {
    let Some(session) = cx.data.as_mut() else {
        return Status::Continue;
    };
    let conn = &mut session.conn;
    conn.client = match socket {
        SocketInfo::Inet(addr) => Some(addr.ip().to_canonical()),
        _ => None,
    };
    conn.local.clear();
    for name in [c"{daemon_addr}", c"{if_addr}"] {
        if let Some(ip) = macro_str(&cx.macros, name).and_then(|v| parse_macro_ip(&v)) {
            conn.add_local(ip);
        }
    }
    conn.server_name = macro_str(&cx.macros, c"j").map(|j| domain::normalize(&j).into_owned());
    go_on(&cx.data, ProtoOpts::NOREPLY_CONNECT)
}

async fn helo_cb(cx: &mut Context<Session>, helo: CString, shared: Arc<Shared>) -> Status {
    if let Some(session) = cx.data.as_mut() {
        // The latest greeting counts: EHLO may be repeated after STARTTLS.
        let text = helo.to_string_lossy();
        session.conn.helo = Some(Helo::parse(&text));
        session.helo_text = text.into_owned();
        session.ask_dns(&shared);
    }
    go_on(&cx.data, ProtoOpts::NOREPLY_HELO)
}

impl Session {
    /// Starts the DNS lookups about the HELO name now, so that the answers are usually
    /// there by RCPT; the same name again keeps those under way.
    fn ask_dns(&mut self, shared: &Shared) {
        self.conn.dns = None;
        let Some(name) = dns_session::name_to_ask(&self.ruleset, &self.conn) else {
            self.dns = None;
            return;
        };
        if self.dns.as_ref().is_some_and(|asked| asked.name() == name) {
            return;
        }
        self.dns = shared
            .resolver()
            .map(|resolver| Asked::start(&resolver, name));
    }

    /// The DNS answers for a RCPT, waited for up to `dns_timeout` (an authenticated
    /// client that `skip_authenticated` exempts never waits).
    async fn dns_for_rcpt(&mut self) {
        let Some(asked) = self.dns.as_mut() else {
            return;
        };
        self.conn.dns = match dns_session::waits(&self.ruleset, &self.conn) {
            true => Some(asked.answers().await),
            false => None,
        };
    }
}

/// Counts the incoming headers of our name, whoever wrote them: none is ours yet.
async fn header(cx: &mut Context<Session>, name: CString) -> Status {
    if let Some(session) = cx.data.as_mut() {
        let name = name.to_string_lossy();
        if session.header_changes && name.trim().eq_ignore_ascii_case(TagHeader::NAME) {
            session.forged = session.forged.saturating_add(1);
        }
    }
    go_on(&cx.data, ProtoOpts::NOREPLY_HEADER)
}

async fn mail(cx: &mut Context<Session>) -> Status {
    if let Some(session) = cx.data.as_mut() {
        session.conn.authenticated = macro_str(&cx.macros, c"{auth_authen}").is_some();
    }
    go_on(&cx.data, ProtoOpts::NOREPLY_MAIL)
}

/// Answers a RCPT, and counts the time it took (from the callback's start: the packet
/// has been read and parsed by then).
async fn rcpt(cx: &mut Context<Session>, args: Vec<CString>, shared: Arc<Shared>) -> Status {
    let arrived = Instant::now();
    if let Some(session) = cx.data.as_mut() {
        session.dns_for_rcpt().await;
    }
    let status = answer_rcpt(cx, args, &shared);
    shared.stats.answered(FrontEnd::Milter, arrived);
    status
}

fn answer_rcpt(cx: &mut Context<Session>, args: Vec<CString>, shared: &Shared) -> Status {
    let (Some(session), Some(arg)) = (cx.data.as_mut(), args.first()) else {
        return Status::Continue;
    };
    let arg = arg.to_string_lossy();
    let rcpt = Recipient::parse(&arg);
    let queue_id = macro_str(&cx.macros, c"i");
    let facts = Facts {
        ruleset: &session.ruleset,
        conn: &session.conn,
        rcpt: &rcpt,
        via: FrontEnd::Milter,
        helo_text: &session.helo_text,
        queue_id: queue_id.as_deref(),
        can_tag: session.header_changes,
    };
    let judgement = facts.judge(&shared.stats);
    let reply = match &judgement.outcome {
        Outcome::Accept | Outcome::DryRun(_) => return Status::Continue,
        Outcome::Tag(value) => {
            session.tag.get_or_insert_with(|| value.clone());
            return Status::Continue;
        }
        Outcome::Refuse(reply) => reply,
    };
    // The MTA reads a lone `%` in a milter reply as a format directive.
    let text = reply.text.replace('%', "%%");
    match cx
        .reply
        .set_error_reply(reply.code, Some(reply.status), [text])
    {
        Ok(()) if reply.is_permanent() => Status::Reject,
        Ok(()) => Status::Tempfail,
        Err(e) => {
            // Cannot happen with a checked reply_url; never refuse without our text.
            facts.not_sent(&judgement, &e.to_string());
            Status::Continue
        }
    }
}

async fn eom(cx: &mut EomContext<Session>, shared: Arc<Shared>) -> Status {
    let Some(session) = cx.data.as_mut() else {
        return Status::Continue;
    };
    let forged = std::mem::take(&mut session.forged);
    if forged > 0 {
        remove_forged(cx, forged, &shared).await;
    }
    if let Some(value) = cx.data.as_mut().and_then(|session| session.tag.take()) {
        if let Err(e) = cx.actions.add_header(TagHeader::NAME, value).await {
            // The recipients were accepted already; the message goes on untagged.
            error!("event=tag result=failed error={:?}", e.to_string());
        }
    }
    end_message(&mut cx.data).await
}

/// Removes the `forged` incoming headers of our name, so that the only one that leaves
/// is ours. The highest index first: Postfix counts the headers left at each request.
async fn remove_forged(cx: &EomContext<Session>, forged: i32, shared: &Shared) {
    let mut removed = 0;
    for index in (1..=forged).rev() {
        match cx
            .actions
            .change_header(TagHeader::NAME, index, None::<CString>)
            .await
        {
            Ok(()) => removed += 1,
            Err(e) => {
                error!(
                    "event=header_removed result=failed index={index} error={:?}",
                    e.to_string()
                );
                break;
            }
        }
    }
    shared
        .stats
        .forged_headers_removed(FrontEnd::Milter, removed);
    let Some(session) = cx.data.as_ref() else {
        return;
    };
    let client = session
        .conn
        .client
        .map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
    let queue_id = macro_str(&cx.macros, c"i")
        .map_or_else(String::new, |id| format!(" queue_id={}", quote(&id)));
    info!(
        "event=header_removed header={} count={removed} client={client} helo={}{queue_id} via=milter",
        TagHeader::NAME,
        quote(&session.helo_text),
    );
}

async fn end_message(data: &mut Option<Session>) -> Status {
    if let Some(session) = data.as_mut() {
        session.conn.authenticated = false;
        session.tag = None;
        session.forged = 0;
    }
    Status::Continue
}

async fn close(cx: &mut Context<Session>) -> Status {
    cx.data = None;
    Status::Continue
}
