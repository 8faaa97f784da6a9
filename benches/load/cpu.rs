//! CPU time over a cell's measured window: the server process's own, from
//! `/proc`, and what Redis spent running the commands the server sent it,
//! from `INFO commandstats`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use redis::aio::MultiplexedConnection;

/// User plus system CPU time of a process so far, all its threads
/// included (ended ones too), in microseconds; `None` without `/proc`.
pub(crate) fn process_cpu_us(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may itself hold spaces and parentheses,
    // so the fields are counted from the last `)`: field 3 comes first.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user_ticks: u64 = fields.get(14 - 3)?.parse().ok()?;
    let system_ticks: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some((user_ticks + system_ticks) as f64 * 1e6 / clock_ticks_per_second())
}

/// The unit of the `/proc` CPU times. `getconf` spares a libc dependency
/// for one number; 100 is its value on every common Linux architecture.
fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// One command's line of `INFO commandstats`.
pub(crate) struct CommandStat {
    /// Lower case, subcommands after a `|` (`config|resetstat`).
    pub(crate) name: String,
    pub(crate) calls: u64,
    pub(crate) usec: u64,
    /// Left out of the total: Redis also counts, under their own names,
    /// the commands a script runs, and their time is already inside the
    /// script's (`EVALSHA`).
    pub(crate) inside_scripts: bool,
}

/// A connection of the driver's own to the Redis the servers use, to
/// reset and read its per-command statistics around a measured window.
pub(crate) struct RedisCpu {
    connection: MultiplexedConnection,
    run_by_scripts: HashSet<String>,
}

impl RedisCpu {
    pub(crate) async fn connect(url: &str) -> Self {
        let connection = redis::Client::open(url)
            .expect("REDIS_URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to Redis for INFO commandstats");
        Self {
            connection,
            run_by_scripts: commands_run_by_scripts(),
        }
    }

    /// Zeroes the statistics: the start of the window.
    pub(crate) async fn reset(&mut self) {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut self.connection)
            .await
            .expect("CONFIG RESETSTAT");
    }

    /// The commands run since the reset, this connection's own left out.
    pub(crate) async fn commands(&mut self) -> Vec<CommandStat> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.connection)
            .await
            .expect("INFO commandstats");
        parse_commandstats(&info, &self.run_by_scripts)
    }
}

/// The Redis CPU time of the commands sent to Redis, in microseconds.
pub(crate) fn sent_usec(commands: &[CommandStat]) -> u64 {
    commands
        .iter()
        .filter(|c| !c.inside_scripts)
        .map(|c| c.usec)
        .sum()
}

const SCRIPT_COMMANDS: [&str; 6] = [
    "eval",
    "evalsha",
    "eval_ro",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
];

/// `INFO commandstats` as a list. When a script ran in the window, every
/// command that one of the crate's scripts runs is marked as run inside
/// scripts: commandstats cannot tell a nested call from one the client
/// sent, and in the bench's scenarios cloakroom sends none of them itself.
fn parse_commandstats(info: &str, run_by_scripts: &HashSet<String>) -> Vec<CommandStat> {
    let mut commands: Vec<CommandStat> = info
        .lines()
        .filter_map(|line| {
            let (name, fields) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |wanted: &str| {
                fields.split(',').find_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    (key == wanted).then(|| value.parse::<u64>().ok())?
                })
            };
            Some(CommandStat {
                name: name.to_lowercase(),
                calls: field("calls")?,
                usec: field("usec")?,
                inside_scripts: false,
            })
        })
        .filter(|c| c.name != "config|resetstat" && c.name != "info")
        .collect();
    let scripts_ran = commands
        .iter()
        .any(|c| SCRIPT_COMMANDS.contains(&c.name.as_str()));
    if scripts_ran {
        for command in &mut commands {
            command.inside_scripts = run_by_scripts.contains(&command.name);
        }
    }
    commands
}

/// The names (lower case) of the commands the crate's Lua scripts run, read
/// from the scripts themselves so that the list cannot fall behind them.
/// Only literal names are found (`redis.call('HSET', ...)`), which is how
/// every script of the crate calls Redis.
fn commands_run_by_scripts() -> HashSet<String> {
    let mut names = HashSet::new();
    let mut dirs = vec![PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "lua") {
                let script = std::fs::read_to_string(&path).unwrap_or_default();
                for (at, _) in script.match_indices("call(") {
                    let before = &script[..at];
                    if !before.ends_with("redis.") && !before.ends_with("redis.p") {
                        continue;
                    }
                    let args = script[at + "call(".len()..].trim_start();
                    let Some(quote) = args.chars().next().filter(|q| *q == '\'' || *q == '"')
                    else {
                        continue;
                    };
                    if let Some((name, _)) = args[1..].split_once(quote) {
                        names.insert(name.to_lowercase());
                    }
                }
            }
        }
    }
    names
}
