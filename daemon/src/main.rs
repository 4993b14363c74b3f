//! `energyd` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Datelike;
use clap::{Parser, Subcommand};
use energyd::config::DaemonConfig;

#[derive(Parser)]
#[command(name = "energyd", version, about = "Energy daemon: meter readings in, per-agency energy, water and carbon out")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run {
        #[arg(long, env = "ENERGYD_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration and its registry; every problem is reported, exit 1 on any.
    CheckConfig {
        #[arg(long, env = "ENERGYD_CONFIG")]
        config: PathBuf,
    },
    /// Run the whole system on loopback with simulated meters: meters -> gateway -> daemon.
    Demo(energyd::demo::DemoArgs),
    /// Serve simulated meters (Modbus TCP) only, as described by a simulator file.
    Simulate {
        #[arg(long)]
        config: PathBuf,
    },
    /// Write a report offline, the same bytes as the API gives (docs/registry.md, "Reports").
    Report {
        /// annual | assessment | plan | statistics
        kind: String,
        #[arg(long, env = "ENERGYD_CONFIG")]
        config: PathBuf,
        /// The year reported (annual, assessment, statistics) or the plan year (plan).
        #[arg(long)]
        year: Option<i32>,
        /// json | csv | xlsx | html
        #[arg(long, default_value = "json")]
        format: String,
        /// zh | en
        #[arg(long, default_value = "zh")]
        lang: String,
        /// Annual report only: one agency.
        #[arg(long)]
        agency: Option<String>,
        /// Figures run to the start of this local day (default: today).
        #[arg(long)]
        as_of: Option<String>,
        /// Output file; `-` for standard output.
        #[arg(long)]
        out: PathBuf,
    },
    /// Weather: `weather import` reads a weather station's daily or hourly CSV into the store as
    /// `outdoor_temperature` of a weather meter (docs/savings.md). Run while the daemon is
    /// stopped.
    #[command(subcommand)]
    Weather(WeatherCmd),
    /// API tokens: `token new` prints a fresh token once and the entry (with its hash) to paste
    /// into the configuration.
    #[command(subcommand)]
    Token(TokenCmd),
    /// The page's users (the users file, `auth.users_file`, default `<data_dir>/users.toml`).
    /// Passwords are read from the terminal (not echoed) or standard input, never the command line.
    #[command(subcommand)]
    User(UserCmd),
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user; the password is asked for (twice on a terminal).
    Add {
        #[arg(long, env = "ENERGYD_CONFIG")]
        config: PathBuf,
        /// The login name.
        name: String,
        /// admin | bureau | agency | engineer
        #[arg(long)]
        role: energyd::auth::Role,
        /// Role agency: the agency it may read.
        #[arg(long)]
        agency: Option<String>,
    },
    /// Set a user's password (and enable the account); its sessions end.
    Passwd {
        #[arg(long, env = "ENERGYD_CONFIG")]
        config: PathBuf,
        name: String,
    },
    /// Disable a user; its sessions end at its next request.
    Disable {
        #[arg(long, env = "ENERGYD_CONFIG")]
        config: PathBuf,
        name: String,
    },
}

#[derive(Subcommand)]
enum WeatherCmd {
    /// Import a CSV: a header row with `date` (daily) or `time` (hourly) and `temperature_c`
    /// (or `t_min_c` and `t_max_c`), °C.
    Import {
        #[arg(long, env = "ENERGYD_CONFIG")]
        config: PathBuf,
        /// The weather meter (in the registry) the readings are stored under.
        #[arg(long)]
        meter: String,
        /// Send the readings through the daemon running at this address (http://HOST:PORT)
        /// instead of writing its store (which it holds while it runs).
        #[arg(long)]
        url: Option<String>,
        /// A token (engineer, bureau or admin) for `--url` when the daemon has `[auth]`.
        #[arg(long, env = "ENERGYD_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The CSV file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Make a random token; prints it once (only its SHA-256 goes into the configuration).
    New {
        /// admin | bureau | agency | engineer | gateway
        #[arg(long)]
        role: energyd::auth::Role,
        /// Who or what holds it (shown in the audit log).
        #[arg(long)]
        name: String,
        /// Role agency: the agency id it may read.
        #[arg(long)]
        agency: Option<String>,
        /// Role gateway: the gateway id it may post for.
        #[arg(long)]
        gateway: Option<String>,
        /// Role gateway: meters without a `gateway` in the registry it may write too
        /// (comma-separated).
        #[arg(long, value_delimiter = ',')]
        meters: Vec<String>,
    },
    /// Print the SHA-256 of a token read from standard input (to check a configured entry).
    Hash,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_modbus=warn"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).init();
}

fn token(cmd: TokenCmd) -> Result<(), String> {
    use energyd::auth::{entry_toml, hash_token, new_token, Role, TokenEntry, Tokens};
    match cmd {
        TokenCmd::New { role, name, agency, gateway, meters } => {
            let entry = TokenEntry { name, role, agency, gateway, meters, sha256: String::new() };
            let token = new_token().map_err(|e| e.to_string())?;
            let entry = TokenEntry { sha256: hash_token(&token), ..entry };
            // The same checks as the configuration (the registry is not read here).
            let cfg = energyd::auth::AuthConfig { tokens: vec![entry.clone()], ..Default::default() };
            Tokens::load(&cfg, std::path::Path::new("."), None).map_err(|e| e.join("\n"))?;
            let hint = match role {
                Role::Gateway => "the gateway's uplink.token_file (or ENERGY_GATEWAY__UPLINK__TOKEN)",
                _ => "the client's `Authorization: Bearer` header",
            };
            println!("token (shown only now; give it to its holder, for {hint}):\n{token}\n");
            println!("add to the [auth] section of energyd.toml (or, as [[token]], to auth.tokens_file):\n{}", entry_toml(&entry));
            Ok(())
        }
        TokenCmd::Hash => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map_err(|e| format!("cannot read standard input: {e}"))?;
            println!("{}", hash_token(line.trim_end_matches(['\n', '\r'])));
            Ok(())
        }
    }
}

/// Reads a password: from the terminal without echo (asked twice), or one line of standard input.
fn read_password() -> Result<String, String> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    let stdin = std::io::stdin();
    let line = |prompt: &str| -> Result<String, String> {
        let tty = stdin.is_terminal();
        let saved = if tty {
            eprint!("{prompt}");
            let _ = std::io::stderr().flush();
            let t = rustix::termios::tcgetattr(&stdin).map_err(|e| format!("terminal: {e}"))?;
            let mut quiet = t.clone();
            quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
            rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet).map_err(|e| format!("terminal: {e}"))?;
            Some(t)
        } else {
            None
        };
        let mut l = String::new();
        let read = stdin.lock().read_line(&mut l);
        if let Some(t) = saved {
            let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &t);
            eprintln!();
        }
        read.map_err(|e| format!("cannot read the password: {e}"))?;
        Ok(l.trim_end_matches(['\n', '\r']).to_string())
    };
    let first = line("password: ")?;
    if stdin.is_terminal() && line("again: ")? != first {
        return Err("the two passwords differ".into());
    }
    Ok(first)
}

fn user(cmd: UserCmd) -> Result<(), String> {
    use energyd::auth::users::{hash_password, load, problems, save, UserEntry};
    let config = match &cmd {
        UserCmd::Add { config, .. } | UserCmd::Passwd { config, .. } | UserCmd::Disable { config, .. } => config.clone(),
    };
    let loaded = DaemonConfig::load(&config).map_err(|e| e.to_string())?;
    let file = loaded.config.users_file();
    let mut users = load(&file, Some(&loaded.registry)).map_err(|e| e.to_string())?;
    let find = |users: &mut Vec<UserEntry>, name: &str| -> Result<usize, String> {
        users.iter().position(|u| u.name == name).ok_or_else(|| format!("no user `{name}` in {}", file.display()))
    };
    let done = match cmd {
        UserCmd::Add { name, role, agency, .. } => {
            if users.iter().any(|u| u.name == name) {
                return Err(format!("user `{name}` exists already in {} (use `energyd user passwd`)", file.display()));
            }
            // Checked before the password is asked for.
            let mut entry = UserEntry { name: name.clone(), role, agency, password: hash_password("placeholder-0123456789").map_err(|e| e.to_string())?, disabled: false };
            let p = problems(&entry, Some(&loaded.registry));
            if !p.is_empty() {
                return Err(p.join("\n"));
            }
            entry.password = hash_password(&read_password()?).map_err(|e| e.to_string())?;
            users.push(entry);
            format!("user `{name}` added")
        }
        UserCmd::Passwd { name, .. } => {
            let i = find(&mut users, &name)?;
            users[i].password = hash_password(&read_password()?).map_err(|e| e.to_string())?;
            users[i].disabled = false;
            format!("password of `{name}` set")
        }
        UserCmd::Disable { name, .. } => {
            let i = find(&mut users, &name)?;
            users[i].disabled = true;
            format!("user `{name}` disabled")
        }
    };
    save(&file, &users).map_err(|e| e.to_string())?;
    println!("{done} ({}; a running energyd reads it within a request)", file.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    energy_gateway::tls::install_crypto_provider();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Run { config } => {
                let loaded = DaemonConfig::load(&config).map_err(|e| format!("{}", e))?;
                let daemon = energyd::Daemon::bind(loaded).await.map_err(|e| e.to_string())?;
                let cancel = tokio_util::sync::CancellationToken::new();
                let c = cancel.clone();
                tokio::spawn(async move {
                    energyd::demo::shutdown_signal().await;
                    tracing::info!("shutting down: finishing requests, committing, closing the store");
                    c.cancel();
                });
                daemon.serve(cancel).await.map_err(|e| e.to_string())
            }
            Cmd::CheckConfig { config } => {
                let loaded = DaemonConfig::load(&config).map_err(|e| e.to_string())?;
                println!(
                    "{}: ok ({} agencies, {} buildings, {} meters)",
                    config.display(),
                    loaded.registry.file.agencies.len(),
                    loaded.registry.file.buildings.len(),
                    loaded.registry.file.meters.len()
                );
                for l in energyd::config::check_report(&loaded.registry, chrono::Utc::now().with_timezone(&loaded.tz).year()) {
                    println!("{l}");
                }
                Ok(())
            }
            Cmd::Demo(args) => energyd::demo::run(args).await.map_err(|e| e.to_string()),
            Cmd::Simulate { config } => energyd::demo::simulate_from_file(&config).await.map_err(|e| e.to_string()),
            Cmd::Token(t) => token(t),
            Cmd::Weather(WeatherCmd::Import { config, meter, url, token, file }) => {
                let loaded = DaemonConfig::load(&config).map_err(|e| e.to_string())?;
                let done = match &url {
                    Some(u) => energyd::savings::weather::import_through(u, token.as_deref(), &loaded.registry, loaded.tz, &meter, &file).await,
                    None => energyd::savings::weather::import(&loaded.config.data_dir, &loaded.registry, loaded.tz, &meter, &file).await,
                }
                .map_err(|e| e.to_string())?;
                if let Some(u) = &url {
                    println!("{}: {} readings of outdoor_temperature for meter `{meter}` sent through the daemon at {u} and accepted ({} rows without a value skipped)", file.display(), done.written, done.missing);
                    return Ok(());
                }
                let day = |ms: i64| energyd::time::rfc3339(ms, loaded.tz).unwrap_or_default();
                println!(
                    "{}: {} readings of outdoor_temperature for meter `{meter}` from {} to {} ({} written, {} already stored, {} conflicting with stored values and kept aside; {} rows without a value skipped)",
                    file.display(),
                    done.readings,
                    day(done.first),
                    day(done.last),
                    done.written,
                    done.unchanged,
                    done.conflicting,
                    done.missing
                );
                Ok(())
            }
            Cmd::User(u) => user(u),
            Cmd::Report { kind, config, year, format, lang, agency, as_of, out } => {
                let req = energyd::reports::Request {
                    kind: kind.parse()?,
                    year,
                    format: format.parse()?,
                    lang: lang.parse()?,
                    agency,
                    as_of,
                };
                let loaded = DaemonConfig::load(&config).map_err(|e| e.to_string())?;
                energyd::reports::write_offline(&loaded.config.data_dir, &loaded.registry, loaded.tz, &req, &out).await.map_err(|e| e.to_string())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
