//! `customs179 serve` as a real child process, for tests that kill it, restart it on the same
//! database and ports, or start a second one beside it.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::postgres::Schema;
use super::{Api, developer_overrides, free_addr, http_client, service_toml_on};

/// One configuration (database, ports, sections) started as often as a test likes; each start
/// logs to a file of its own. Killed when dropped (its own schema dropped too), so a failing
/// test leaves no process behind.
pub struct ServeProcess {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub db: PathBuf,
    pub api: Api,
    /// More lines of `[intake]`.
    pub intake_keys: String,
    extra_toml: String,
    /// The lines of `[store]`: the SQLite file `db`, or the schema's address.
    store: String,
    /// The service's schema, when it runs on PostgreSQL ([`ServeProcess::on_current_store`]).
    pub schema: Option<Schema>,
    /// Whether the schema is this process's own, dropped with it.
    owns_schema: bool,
    /// Ports every start listens on, when the test wants them kept (see [`ServeProcess::keep_ports`]).
    kept_ports: Option<(SocketAddr, SocketAddr)>,
    child: Option<Child>,
    /// How many times it was started.
    pub starts: usize,
    /// When the running process was spawned, unix ms: claims made since are its own.
    pub spawned_ms: i64,
}

impl ServeProcess {
    /// A configuration in `dir` (database `dir/customs179.sqlite`) with the sections of
    /// `extra_toml`; starts nothing.
    pub fn configure(dir: &Path, extra_toml: &str) -> ServeProcess {
        let config = tempfile::Builder::new().prefix("customs179-").suffix(".toml").tempfile_in(dir).unwrap();
        let (_, config) = config.keep().unwrap();
        ServeProcess {
            dir: dir.to_owned(),
            config,
            db: dir.join("customs179.sqlite"),
            store: format!("path = {:?}", dir.join("customs179.sqlite").to_str().unwrap()),
            schema: None,
            owns_schema: false,
            intake_keys: String::new(),
            extra_toml: extra_toml.to_owned(),
            kept_ports: None,
            api: Api {
                client: http_client(Some(Duration::from_secs(15))),
                intake: String::new(),
                admin: String::new(),
            },
            child: None,
            starts: 0,
            spawned_ms: 0,
        }
    }

    /// Runs on the store the test runs on ([`super::postgres::backend`]): the SQLite file,
    /// or a new schema of the test PostgreSQL database, dropped with this value.
    pub async fn on_current_store(mut self) -> ServeProcess {
        let (store, schema) = super::store_toml(&self.db).await;
        (self.store, self.schema, self.owns_schema) = (store, schema, true);
        self
    }

    /// Runs in `schema` (shared with other processes of the test), or on the SQLite file.
    pub fn on_schema(mut self, schema: Option<&Schema>) -> ServeProcess {
        if let Some(schema) = schema {
            (self.store, self.schema) = (format!("url = {:?}", schema.url()), Some(schema.clone()));
        }
        self
    }

    /// The sessionIDs of every request stored, read from the database itself.
    pub async fn stored_session_ids(&self) -> std::collections::HashSet<String> {
        super::stored_session_ids_in(&self.db, self.schema.as_ref()).await
    }

    /// The counts by state as the store keeps them (those not 0), and as a scan of the
    /// requests table finds them, both by state.
    pub async fn counts_kept_and_counted(&self) -> (Vec<(String, i64)>, Vec<(String, i64)>) {
        const KEPT: &str = "SELECT state, CAST(SUM(n) AS BIGINT) FROM state_counts GROUP BY state HAVING SUM(n) <> 0 ORDER BY state";
        const COUNTED: &str = "SELECT state, COUNT(*) FROM requests GROUP BY state ORDER BY state";
        let schema = self.schema.as_ref();
        (super::query_rows(&self.db, schema, KEPT).await, super::query_rows(&self.db, schema, COUNTED).await)
    }

    /// Every start listens on the same two ports from now on, as a real deployment does (a
    /// caller keeps calling one address across restarts). A port released by one start could be
    /// taken by another process before the next: only for tests that need it.
    pub fn keep_ports(mut self) -> ServeProcess {
        let (intake, admin) = (free_addr(), free_addr());
        self.kept_ports = Some((intake, admin));
        self.api.intake = format!("http://{intake}");
        self.api.admin = format!("http://{admin}");
        self
    }

    /// Spawns `serve` and waits until both ports accept connections; how long that took.
    pub async fn start_listening(&mut self) -> Duration {
        let began = Instant::now();
        self.spawn();
        self.wait_until_listening().await;
        began.elapsed()
    }

    /// Spawns `serve` and returns once its log says it started (both ports listen, the
    /// workers run); panics if it exits first.
    pub async fn start(&mut self) {
        self.spawn();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log().contains("customs179 started") {
            if let Some(status) = self.exited() {
                panic!("serve exited ({status}) during start-up:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "serve does not say it started:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until both ports accept connections (customs' calls are answered from then on,
    /// before start-up has ended); panics if the process exits first.
    pub async fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for url in [self.api.intake.clone(), self.api.admin.clone()] {
            while tokio::net::TcpStream::connect(url.trim_start_matches("http://")).await.is_err() {
                if let Some(status) = self.exited() {
                    panic!("serve exited ({status}) before listening:\n{}", self.log());
                }
                assert!(Instant::now() < deadline, "serve does not listen on {url}:\n{}", self.log());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    /// Spawns `serve` and returns at once. Each start listens on ports of its own: a port
    /// released by the last start may meanwhile be anyone's.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "one process at a time");
        self.starts += 1;
        let (intake, admin) = self.kept_ports.unwrap_or_else(|| (free_addr(), free_addr()));
        std::fs::write(
            &self.config,
            service_toml_on(intake, admin, &self.store, &self.intake_keys, &self.extra_toml),
        )
        .unwrap();
        self.api.intake = format!("http://{intake}");
        self.api.admin = format!("http://{admin}");
        let mut command = Command::new(env!("CARGO_BIN_EXE_customs179"));
        command
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(self.log_path()).unwrap());
        for name in developer_overrides() {
            command.env_remove(name);
        }
        // Its own process group, so that [`ServeProcess::terminate`]'s Ctrl-Break reaches it alone.
        #[cfg(windows)]
        std::os::windows::process::CommandExt::creation_flags(
            &mut command,
            windows_sys::Win32::System::Threading::CREATE_NEW_PROCESS_GROUP,
        );
        self.spawned_ms = super::now_ms();
        self.child = Some(command.spawn().unwrap());
    }

    /// SIGKILL: no chance to finish anything. Returns the status of a process that had
    /// already exited on its own.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take().expect("a running process");
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        let _ = child.kill();
        child.wait().unwrap();
        None
    }

    /// Asks for a graceful stop and waits (up to `within`) for the exit: SIGTERM, or on
    /// Windows Ctrl-Break to the process group `serve` was started in.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        let pid = self.child.as_ref().expect("a running process").id();
        #[cfg(unix)]
        assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
        #[cfg(windows)]
        {
            use windows_sys::Win32::System::Console::{CTRL_BREAK_EVENT, GenerateConsoleCtrlEvent};
            // SAFETY: a plain call; the group id is the child's pid (CREATE_NEW_PROCESS_GROUP).
            let sent = unsafe { GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, pid) };
            assert!(sent != 0, "Ctrl-Break to {pid}: {}", std::io::Error::last_os_error());
        }
        self.wait_exit(within).await
    }

    /// Waits (up to `within`) for the process to exit on its own.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(Instant::now() < deadline, "serve did not exit within {within:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status of a process that ended; it is then no longer running.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        Some(status)
    }

    /// What the latest start logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last 20 lines of [`ServeProcess::log`].
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!(
            "serve-{}-{}.log",
            self.config.file_stem().unwrap().to_string_lossy(),
            self.starts
        ))
    }
}

impl std::ops::Deref for ServeProcess {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(schema) = self.schema.take().filter(|_| self.owns_schema) {
            // Drop runs inside the test's runtime, which cannot be blocked on: the schema goes
            // on a thread (and a runtime) of its own.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
                runtime.map(|runtime| runtime.block_on(schema.drop_now()))
            })
            .join();
        }
    }
}
