//! The command lines of kdstat and kdsend, here rather than in the binaries
//! so that other tools (the completion generator in `xtask`) can build the
//! same clap `Command`s.

use crate::{parse_interval, parse_key, parse_timeout, Timeout};
use clap::Parser;
use kmod_ipc::{Key, MsgType};
use std::ffi::OsString;
use std::time::Duration;

const KDSTAT_LONG_ABOUT: &str = "\
Show the status of the running kerneld, or change its settings live.

Without WORD, kdstat prints the status: version, pid, release delay,
keep/debug flags and the job queue.  A WORD changes the daemon and then
prints the status:

  debug, nodebug    log every request (or stop doing so)
  keep, nokeep      never unload modules automatically (or do again)
  delay=N           sweep for unused modules every N seconds: a module
                    unused at two sweeps in a row is unloaded, so N to 2N
                    seconds after its last use (the second chance)
  flush             drop the requests waiting in the queue for kerneld
                    (types 1-255; their senders get an error); says how
                    many, and how many messages it left (replies, types
                    above 255), which the status's queue line counts
  policy            print the policy rules in force, with hit counters
  mode=enforce      enforce the policy; mode=audit only logs would-denies
  deny request|module PATTERN [if COND...]
                    add a policy rule live (allow ... likewise; a locked
                    policy takes only deny rules)
  why MODULE        why MODULE is loaded: for a module kerneld loaded, the
                    name requested, the requester, the time, the module
                    that pulled it in and the rule that allowed it; for
                    another, the kernel's refcount and holders (--json:
                    one document with the same)
  status            the status (the default)

Settings changed this way last until kerneld restarts; to keep them, put
them in kerneld's configuration file.  Any other word is passed to the
daemon as it is, and its error is reported with exit status 1.";

const KDSTAT_AFTER_LONG_HELP: &str = "\
JSON (--json): one document.  With --watch, one document per interval,
each on one line (JSON lines).  The fields of schema 1 (a field may be
added within a schema; renaming, removing or changing one makes a new
schema number):
  schema              integer    1: the version of this list of fields
  version             string     kerneld version
  pid                 integer    daemon pid
  key                 string     queue key, e.g. \"0x6b65726e\"
  started_at          integer    start time, unix seconds
  uptime_seconds      number     seconds since the daemon started
  delay               integer    the sweep interval in seconds
  keep, debug         boolean    the flags
  workers             integer    worker threads started
  jobs                array      requests in progress, each with
      type (string), type_number (integer), text (string),
      requester_pid (integer or null), requester (object or null),
      age_seconds (number), waiters (integer: requests merged into this
      one), worker_tid (integer or null)
  loaded_modules      array      modules kerneld loaded, each with
      name (string), requested_as (string), dependencies (array of
      strings), loaded_at (integer, unix seconds), age_seconds (integer),
      idle_seconds (number or null), unused_sweeps (integer), requester
      (object or null), pulled_in_by (string or null: the module of the
      same request that needed it), allowed_by (string or null: the
      policy rule, or default; null in records written before kerneld
      kept it)
  recent_requests     array      the last module requests, oldest first,
      each with name (string), requester (object or null), status
      (integer), text (string: the answer), age_seconds (number),
      duration_ms (number)
  next_sweep_seconds  number or null   until the next unload sweep
  counters            object     requests (object: type name -> integer),
      succeeded, failed, merged, expired, cached, denied, bad_messages,
      replies_dropped, replies_purged, journal_dropped, waiters_refused,
      negative_cache_entries (integers)
  queue               object     id, messages, bytes, max_bytes,
      last_sender_pid, last_receiver_pid (integers), or error (string)
  policy              object     mode, match, default (strings), lock
      (boolean), rules (array of objects: rule, origin (strings), hits
      (integer))
  tracing             string or null   how requesters are traced
  helper              object     what /proc/sys/kernel/modprobe holds:
      path (string, empty: no helper), kerneld_shim (boolean: whether it
      is kerneld's shim, without which no request reaches kerneld), error
      (string or null: why it could not be read; path and kerneld_shim
      are then null)
  module_loads        object     module loads by every loader, through the
      BPF LSM (module-loads): mode (off, observe or enforce),
      unknown_files and init_module_loads (allow or refuse), attached
      (boolean), error (string or null: why not attached), on_stop
      (detach: when kerneld stops or dies the program goes, and loads are
      neither seen nor refused; pinned: module-loads-pin, the program
      outlives a kerneld that dies), pinned_in (string or null: the
      directory of its pins), host (object or null: kmod_version
      (integer or null), kernel_decompresses (string or null),
      module_files (integer), compressed_files (object: format ->
      integer), compressed_loads (finit_module, init_module or null: how
      libkmod hands a compressed module to the kernel; init_module is
      judged by init_module_loads, not by content), summary (string)),
      verdicts (object or null: files, denied, unreadable, judged_at
      (integers), duration_ms (number)), counters (integers:
      finit_module, init_module, requests, allowed, denied, unknown,
      fallback, refused, would_be_refused, reported, unreadable)
  kernel_shim         object     only while the kerneld_shim module is
      loaded, added by kdstat: the settings key, read_wait_ms,
      reply_wait_ms, fallback (/sys/module/kerneld_shim/parameters/), and
      the counters (/sys/kernel/kerneld_shim/) requests, answered, failed, nowait, fallback_no_queue,
      fallback_unread, fallback_full, fallback_gone, untrusted_queue,
      timed_out, interrupted, late_answers, fallback_suspend,
      fallback_died, and server (integer: the pid of the kerneld registered
      as serving it, 0 for none; only when kdstat runs as root)
A requester object has pid, uid, gid (integers), comm, cgroup,
parent_comm (strings) and namespaces (array of strings).

kdstat why MODULE --json prints {\"schema\", \"name\", \"requests\",
\"remembered\", \"modules\": [...]}: for a module not loaded, requests are
the recent requests about it (requested_as, outcome: denied, failed,
blacklisted or done, status, answer, seconds_ago, requester) and
remembered the failure answered from memory (answer, seconds_left) or
null; modules has one object
per module (an alias gives the module requested as it), each with module
(string), loaded_by_kerneld (boolean), kernel (object: state, refcount,
holders) and, when loaded_by_kerneld, requested_as, loaded_at, requester,
pulled_in_by, allowed_by and dependencies as in loaded_modules; loads
lists the loads of it kerneld's BPF LSM program saw (module-loads), newest
first: at, syscall, file, sha256, pid, comm, cgroup_id and outcome
(allowed, refused or would-be-refused).
kdstat --json prints the document as the daemon sent it, after checking
it parses.

Prometheus (--prometheus): the same status in the text exposition format
(0.0.4), e.g. kerneld_up, kerneld_requests_total{type},
kerneld_answers_total{result}, kerneld_requests_denied_total,
kerneld_requests_cached_total, kerneld_requests_merged_total,
kerneld_messages_malformed_total, kerneld_modules_loaded,
kerneld_policy_rule_hits_total{rule,origin}, kerneld_module_helper_shim,
kerneld_module_loads_mode{mode}, kerneld_module_loads_attached,
kerneld_module_loads_total{syscall}, kerneld_module_load_verdicts_total{verdict},
kerneld_module_loads_refused_total,
kerneld_shim_*_total and kerneld_shim_server_registered (with
kerneld_shim loaded),
kerneld_journal_lines_dropped_total and kerneld_start_time_seconds; the
full list is in kdstat(8).  kerneld writes the same into a directory at
each sweep with metrics-dir (kerneld.conf(5)).

Exit status:
  0    success
  1    kerneld answered with an error (e.g. an unknown word), or other failure
  2    usage error
  3    kerneld is not running (no message queue at the key)
  4    permission denied on the queue (root is needed)
  124  no reply within the timeout

Examples:
  kdstat                 print the status
  kdstat delay=120       unload unused modules after two to four minutes
  kdstat --json | jq .counters
  kdstat --prometheus    the status for Prometheus
  kdstat why sctp        who asked for sctp, when, and which rule allowed it
  kdstat --watch 1       refresh every second until Ctrl-C
  kdstat --watch 10 --json >>kerneld.jsonl   a JSON line every 10 seconds";

/// kdstat's command line.
#[derive(Parser, Debug)]
#[command(
    name = "kdstat",
    version,
    about = "Show the status of the running kerneld, or change its settings live",
    long_about = KDSTAT_LONG_ABOUT,
    after_long_help = KDSTAT_AFTER_LONG_HELP
)]
pub struct KdstatArgs {
    /// status, debug, nodebug, keep, nokeep, delay=N, flush, policy,
    /// mode=enforce|audit, why MODULE, or a rule (deny request net-pf-33)
    #[arg(value_name = "WORD", conflicts_with_all = ["watch"])]
    pub word: Vec<String>,

    /// Print the status as one JSON document (fields below, in --help);
    /// with --watch, one per line; with `why MODULE`, its answer
    #[arg(long)]
    pub json: bool,

    /// Print the status in the Prometheus text format (series in
    /// kdstat(8)), e.g. for node_exporter's textfile collector
    #[arg(long, conflicts_with_all = ["json", "watch", "word"])]
    pub prometheus: bool,

    /// Print the status every SECONDS (default 2) until Ctrl-C: in place
    /// on a terminal, one after the other otherwise
    #[arg(
        long,
        value_name = "SECONDS",
        num_args = 0..=1,
        default_missing_value = "2",
        value_parser = parse_interval
    )]
    pub watch: Option<Duration>,

    /// Queue key, hex (0x6b65726e) or decimal
    #[arg(long, value_name = "KEY", env = "KERNELD_KEY", value_parser = parse_key)]
    pub key: Option<Key>,

    /// Seconds to wait for the answer (0: forever)
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_timeout)]
    pub timeout: Timeout,
}

const KDSEND_AFTER_LONG_HELP: &str = "\
TYPE is a number or a name:
  1 system           2 request_module (request)   3 release_module (release)
  4 delayed_release  5 cancel_release             6 request_route (route)
  7 screenblanker    8 pnp                        255 status (debug)
  256 arp (kerneld never receives types above 255)

Without -r the message carries id 0, as a kernel request that wants no
answer, and kdsend returns as soon as it is queued.  With -r it carries
reply id 1024 + kdsend's pid; kdsend waits for the answer and prints
`status N` and then the answer's text.  -e (--exit-status) waits for the
answer too, and exits 1 when its status is not 0, as modprobe does.

Exit status: 0 sent (and, with -r, answered, whatever the status; with
-e, answered with status 0), 1 answered with a status other than 0 (with
-e) or other failure, 2 usage error, 3 kerneld is not running, 4
permission denied (root is needed), 124 no reply within the timeout.

Examples:
  kdsend 2 ppp             ask kerneld to load the module for \"ppp\"
  kdsend 4 ppp             ask for ppp to be unloaded after the delay
  kdsend -r 255 status     what kdstat does: print the status
  kdsend -r request_module char-major-108
  kdsend -e 2 ppp || echo \"no ppp\"   load it as modprobe would, in a script";

/// kdsend's command line.
#[derive(Parser, Debug)]
#[command(
    name = "kdsend",
    version,
    about = "Send a kerneld message as the kernel would, and optionally wait for the reply",
    after_long_help = KDSEND_AFTER_LONG_HELP
)]
pub struct KdsendArgs {
    /// Wait for the reply and print its status and text
    #[arg(short = 'r', long = "reply")]
    pub reply: bool,

    /// As -r, and exit 1 when the reply's status is not 0 (as modprobe)
    #[arg(short = 'e', long = "exit-status")]
    pub exit_status: bool,

    /// Message type: a number or a name (list in --help)
    #[arg(value_name = "TYPE", value_parser = parse_type)]
    pub mtype: MsgType,

    /// Message text (a module name, a word, a command)
    #[arg(value_name = "MESSAGE")]
    pub message: Option<OsString>,

    /// Send the 1995 header (type, id, text) without version and pid
    #[arg(long)]
    pub old_header: bool,

    /// Queue key, hex (0x6b65726e) or decimal
    #[arg(long, value_name = "KEY", env = "KERNELD_KEY", value_parser = parse_key)]
    pub key: Option<Key>,

    /// Seconds to wait for the reply with -r (0: forever)
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_timeout)]
    pub timeout: Timeout,
}

/// Clap parser for kdsend's TYPE: a number from 1, or a name.
pub fn parse_type(s: &str) -> Result<MsgType, String> {
    match MsgType::parse(s) {
        // msgsnd refuses types below 1.
        Some(t) if t.number() >= 1 => Ok(t),
        Some(_) => Err("message types start at 1".into()),
        None => Err(format!(
            "unknown message type {s:?}: give a number or one of system, request_module, \
             release_module, delayed_release, cancel_release, request_route, screenblanker, \
             pnp, status, arp"
        )),
    }
}
