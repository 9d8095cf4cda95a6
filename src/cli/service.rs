//! `customs179 service`: `serve` as a Windows service, where EportClient and the card are.
//!
//! What the service control manager is told (the command line it starts, the folder's
//! access list, the event source) is built by plain functions, tested on every OS; only
//! the calls into Windows are behind `cfg(windows)`.
#![cfg_attr(
    not(windows),
    allow(
        dead_code,
        reason = "only Windows has a service control manager; the plain parts are tested everywhere"
    )
)]

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use customs179_service::config::{DEFAULT_MAX_LOG_FILES, LogTo};

use super::Failure;

/// Registers, starts, stops and removes the Windows service that runs `serve`.
///
/// install registers the service "customs179" to start with Windows and to be restarted
/// when it fails (after 5, 10 and 30 s), running `serve` with the configuration FILE,
/// which must already be valid; it limits the configuration's folder to SYSTEM and
/// Administrators (the file holds the card's PIN) and registers the event log source.
/// The service works in the configuration's folder: relative paths in it (the database,
/// `[log] dir`) are under that folder, and it logs to daily files in `logs` there unless
/// `[log] dir` says otherwise; starts, stops and failures also go to the Windows event
/// log. Without --config the file is %ProgramData%\customs179\customs179.toml.
/// start and stop wait until the service is running or stopped; uninstall stops it first.
/// Windows only: elsewhere this exits 2 (on Linux run serve under systemd).
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    /// The TOML configuration file (default %ProgramData%\customs179\customs179.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
}

#[derive(clap::Subcommand, Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// Registers the service (automatic start, restart on failure) with the configuration.
    Install,
    /// Stops the service if it runs, and removes it.
    Uninstall,
    /// Starts the service and waits until it runs.
    Start,
    /// Asks the service to stop gracefully and waits until it has.
    Stop,
    /// What the service control manager starts; from a console, use serve.
    #[command(hide = true)]
    Run,
}

/// The service's name, for `sc`, `net start` and the event log.
pub const SERVICE_NAME: &str = "customs179";
const DISPLAY_NAME: &str = "customs179: customs 179 payment data";
const DESCRIPTION: &str = "Answers customs 179 payment-data requests, signs them with the customs IC card \
    through EportClient and uploads them to customs.";
/// Where Windows keeps what services write when %ProgramData% is not set.
const PROGRAM_DATA: &str = r"C:\ProgramData";
/// The folder the service logs to, in its configuration's folder, unless `[log] dir` is set.
const LOG_DIR: &str = "logs";
/// The message file of .NET's event sources: every event id's text is the event's own
/// string, so the event log shows the message without a resource file of ours.
const EVENT_MESSAGE_FILE: &str = r"%SystemRoot%\Microsoft.NET\Framework64\v4.0.30319\EventLogMessages.dll";
const EVENT_SOURCE_KEY: &str = r"HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\customs179";

pub fn run(args: Args) -> Result<(), Failure> {
    let config = config_path(args.config.as_deref(), std::env::var_os("ProgramData").as_deref())?;
    windows::act(args.action, &config)
}

/// `%ProgramData%\customs179`, where the service keeps its configuration, database and logs.
fn data_dir(program_data: Option<&OsStr>) -> PathBuf {
    let mut dir = program_data.filter(|p| !p.is_empty()).unwrap_or(OsStr::new(PROGRAM_DATA)).to_owned();
    if !dir.to_string_lossy().ends_with(['\\', '/']) {
        dir.push("\\");
    }
    dir.push(SERVICE_NAME);
    PathBuf::from(dir)
}

/// The configuration the service runs with, as an absolute path: the service control
/// manager starts it in another working directory.
fn config_path(given: Option<&Path>, program_data: Option<&OsStr>) -> Result<PathBuf, Failure> {
    let Some(given) = given else {
        let mut default = data_dir(program_data).into_os_string();
        default.push(format!("\\{SERVICE_NAME}.toml"));
        return Ok(PathBuf::from(default));
    };
    std::path::absolute(given).map_err(|e| Failure::BadInput(format!("--config {}: {e}", given.display())))
}

/// The command line the service control manager starts the executable with.
fn launch_arguments(config: &Path) -> Vec<OsString> {
    ["service", "run", "--config"]
        .into_iter()
        .map(OsString::from)
        .chain([config.as_os_str().to_owned()])
        .collect()
}

/// What the service logs to: standard error goes nowhere under the service control
/// manager, so unless the configuration names a folder, `logs` beside it.
fn service_log(configured: LogTo) -> LogTo {
    match configured {
        LogTo::Stderr => LogTo::Files { dir: PathBuf::from(LOG_DIR), max_files: DEFAULT_MAX_LOG_FILES },
        files => files,
    }
}

/// `icacls` arguments that leave `dir` (and what is in it) to SYSTEM and Administrators:
/// under %ProgramData% every user may read by default, and the configuration holds the PIN.
/// Well-known SIDs, since the groups' names are translated on a Chinese Windows.
fn folder_acl_arguments(dir: &Path) -> Vec<OsString> {
    let mut args = vec![dir.as_os_str().to_owned()];
    args.extend(
        ["/inheritance:r", "/grant:r", "*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F", "/T", "/Q"]
            .map(OsString::from),
    );
    args
}

/// `reg` arguments that register (or remove) the event log source.
fn event_source_arguments(register: bool) -> Vec<OsString> {
    let args: &[&str] = if register {
        &[
            "add",
            EVENT_SOURCE_KEY,
            "/v",
            "EventMessageFile",
            "/t",
            "REG_EXPAND_SZ",
            "/d",
            EVENT_MESSAGE_FILE,
            "/f",
        ]
    } else {
        &["delete", EVENT_SOURCE_KEY, "/f"]
    };
    args.iter().map(OsString::from).collect()
}

/// Where the service's process runs: its configuration's folder.
fn working_dir(config: &Path) -> Result<&Path, Failure> {
    config
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .ok_or_else(|| Failure::BadInput(format!("--config {} has no folder", config.display())))
}

#[cfg(not(windows))]
mod windows {
    use std::path::Path;

    use super::{Action, Failure};

    pub fn act(_action: Action, _config: &Path) -> Result<(), Failure> {
        Err(Failure::BadInput(
            "customs179 service registers a Windows service; on Linux run customs179 serve under systemd \
             (OPERATIONS.md, \"Running it\")"
                .to_owned(),
        ))
    }
}

#[cfg(windows)]
mod windows {
    //! The calls into the service control manager and the event log.

    use std::ffi::OsString;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, OnceLock};
    use std::time::{Duration, Instant};

    use windows_service::service::{
        ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
        ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod, ServiceInfo,
        ServiceStartType, ServiceState, ServiceStatus, ServiceType,
    };
    use windows_service::service_control_handler::{self, ServiceControlHandlerResult, ServiceStatusHandle};
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

    use super::super::serve::{self, Phase};
    use super::{Action, Failure, SERVICE_NAME};

    /// The configuration `service run` was given, for the service's main function,
    /// which the control manager calls with arguments of its own.
    static CONFIG: OnceLock<PathBuf> = OnceLock::new();

    windows_service::define_windows_service!(ffi_service_main, service_main);

    pub fn act(action: Action, config: &Path) -> Result<(), Failure> {
        match action {
            Action::Install => install(config),
            Action::Uninstall => uninstall(),
            Action::Start => start(),
            Action::Stop => stop(),
            Action::Run => {
                let _ = CONFIG.set(config.to_owned());
                windows_service::service_dispatcher::start(SERVICE_NAME, ffi_service_main).map_err(|e| {
                    Failure::BadInput(format!(
                        "service run is started by the service control manager; from a console use serve ({e})"
                    ))
                })
            }
        }
    }

    fn scm(what: &'static str) -> impl FnOnce(windows_service::Error) -> Failure {
        // The crate's own text ("IO error in winapi call") hides Windows' reason in its source.
        move |e| {
            let reason =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |source| source.to_string());
            Failure::Check(format!("cannot {what}: {reason}"))
        }
    }

    fn manager(access: ServiceManagerAccess) -> Result<ServiceManager, Failure> {
        ServiceManager::local_computer(None::<&str>, access).map_err(scm("reach the service control manager"))
    }

    fn open(access: ServiceAccess) -> Result<windows_service::service::Service, Failure> {
        manager(ServiceManagerAccess::CONNECT)?
            .open_service(SERVICE_NAME, access)
            .map_err(scm("open the service"))
    }

    /// Removes the event log source, if there is one; its entries stay readable without it.
    fn forget_event_source() {
        let _ = std::process::Command::new("reg")
            .args(super::event_source_arguments(false))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }

    /// Runs a Windows tool to its end; its failure is a failed check.
    fn tool(program: &str, args: Vec<OsString>) -> Result<(), Failure> {
        let status = std::process::Command::new(program)
            .args(&args)
            .status()
            .map_err(|e| Failure::Check(format!("cannot run {program}: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(Failure::Check(format!("{program} {args:?} failed: {status}")))
        }
    }

    fn install(config: &Path) -> Result<(), Failure> {
        // A service that cannot start is found out now, not at the next boot.
        super::super::load_config(config)?;
        let executable_path = std::env::current_exe()
            .map_err(|e| Failure::Check(format!("cannot find this executable: {e}")))?;
        let info = ServiceInfo {
            name: SERVICE_NAME.into(),
            display_name: super::DISPLAY_NAME.into(),
            service_type: ServiceType::OWN_PROCESS,
            start_type: ServiceStartType::AutoStart,
            error_control: ServiceErrorControl::Normal,
            executable_path,
            launch_arguments: super::launch_arguments(config),
            dependencies: vec![],
            account_name: None,
            account_password: None,
        };
        let service = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?
            .create_service(
                &info,
                ServiceAccess::CHANGE_CONFIG | ServiceAccess::START | ServiceAccess::DELETE,
            )
            .map_err(scm("register the service"))?;
        // Half a service (one that is not restarted, say) is worse than none: a step that
        // fails takes the registration back, so that install changes nothing or everything.
        if let Err(failure) = configure(&service, config) {
            if let Err(e) = service.delete() {
                eprintln!("the service was registered but cannot be removed again: {e}");
            }
            forget_event_source();
            return Err(failure);
        }
        println!(
            "installed the service {SERVICE_NAME} with {}; start it with: customs179 service start",
            config.display()
        );
        Ok(())
    }

    /// What install sets beyond the registration: description, restarts, event source, ACL.
    fn configure(service: &windows_service::service::Service, config: &Path) -> Result<(), Failure> {
        service.set_description(super::DESCRIPTION).map_err(scm("describe the service"))?;
        let restart = |secs| ServiceAction {
            action_type: ServiceActionType::Restart,
            delay: Duration::from_secs(secs),
        };
        service
            .update_failure_actions(ServiceFailureActions {
                reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
                reboot_msg: None,
                command: None,
                actions: Some(vec![restart(5), restart(10), restart(30)]),
            })
            .map_err(scm("set the restarts after a failure"))?;
        // serve exits non-zero when a task dies: that is a failure to restart after too.
        service
            .set_failure_actions_on_non_crash_failures(true)
            .map_err(scm("have an exit with an error count as a failure"))?;
        tool("reg", super::event_source_arguments(true))?;
        tool("icacls", super::folder_acl_arguments(super::working_dir(config)?))
    }

    fn uninstall() -> Result<(), Failure> {
        let service = open(ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE)?;
        if service.query_status().map_err(scm("query the service"))?.current_state != ServiceState::Stopped {
            service.stop().map_err(scm("stop the service"))?;
            wait_for(&service, ServiceState::Stopped, Duration::from_secs(60))?;
        }
        service.delete().map_err(scm("remove the service"))?;
        forget_event_source();
        println!("removed the service {SERVICE_NAME}");
        Ok(())
    }

    fn start() -> Result<(), Failure> {
        let service = open(ServiceAccess::QUERY_STATUS | ServiceAccess::START)?;
        // The manager refuses a start while it is starting another service (at boot, say):
        // that passes, so it is asked again for a while.
        let began = Instant::now();
        while let Err(e) = service.start::<&str>(&[]) {
            if !database_locked(&e) || began.elapsed() > Duration::from_secs(30) {
                return Err(scm("start the service")(e));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        wait_for(&service, ServiceState::Running, Duration::from_secs(60))?;
        println!("the service {SERVICE_NAME} is running");
        Ok(())
    }

    fn database_locked(e: &windows_service::Error) -> bool {
        let locked = windows_sys::Win32::Foundation::ERROR_SERVICE_DATABASE_LOCKED;
        matches!(e, windows_service::Error::Winapi(io) if io.raw_os_error() == i32::try_from(locked).ok())
    }

    fn stop() -> Result<(), Failure> {
        let service = open(ServiceAccess::QUERY_STATUS | ServiceAccess::STOP)?;
        service.stop().map_err(scm("stop the service"))?;
        wait_for(&service, ServiceState::Stopped, Duration::from_secs(60))?;
        println!("the service {SERVICE_NAME} has stopped");
        Ok(())
    }

    fn wait_for(
        service: &windows_service::service::Service,
        state: ServiceState,
        limit: Duration,
    ) -> Result<(), Failure> {
        let began = Instant::now();
        loop {
            let status = service.query_status().map_err(scm("query the service"))?;
            if status.current_state == state {
                return Ok(());
            }
            if status.current_state == ServiceState::Stopped || began.elapsed() > limit {
                return Err(Failure::Check(format!(
                    "the service is {:?}, not {state:?}, after {} s: see its log and the event log",
                    status.current_state,
                    began.elapsed().as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn service_main(_arguments: Vec<OsString>) {
        let stop = Arc::new(tokio::sync::Notify::new());
        let asked = Arc::clone(&stop);
        let handler = move |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                // A permit is kept if serve is not waiting yet: a stop during the start counts.
                asked.notify_one();
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        };
        let Ok(status) = service_control_handler::register(SERVICE_NAME, handler) else {
            event_log(true, "customs179 could not register with the service control manager");
            return;
        };
        report(&status, ServiceState::StartPending, ServiceExitCode::Win32(0), Duration::from_secs(60));
        let outcome = run_service(&status, stop);
        let exit = match &outcome {
            Ok(()) => {
                event_log(false, "customs179 stopped");
                ServiceExitCode::Win32(0)
            }
            Err(failure) => {
                tracing::error!("{}", failure.message());
                event_log(true, failure.message());
                ServiceExitCode::ServiceSpecific(failure.exit_code().into())
            }
        };
        report(&status, ServiceState::Stopped, exit, Duration::ZERO);
    }

    fn run_service(status: &ServiceStatusHandle, stop: Arc<tokio::sync::Notify>) -> Result<(), Failure> {
        let config_path =
            CONFIG.get().ok_or_else(|| Failure::BadInput("service run has no --config".into()))?;
        let dir = super::working_dir(config_path)?;
        std::env::set_current_dir(dir)
            .map_err(|e| Failure::BadInput(format!("cannot work in {}: {e}", dir.display())))?;
        let mut config = super::super::load_config(config_path)?;
        config.log.to = super::service_log(config.log.to);
        serve::init_logging(config.log.format, &config.log.level, &config.log.to)?;
        let stopping_hint = Duration::from_secs(config.shutdown_timeout_secs + 10);
        super::super::block_on(serve::serve(
            config,
            async move { stop.notified().await },
            |phase| match phase {
                Phase::Running => {
                    event_log(false, "customs179 started");
                    report(status, ServiceState::Running, ServiceExitCode::Win32(0), Duration::ZERO);
                }
                Phase::Stopping => {
                    report(status, ServiceState::StopPending, ServiceExitCode::Win32(0), stopping_hint)
                }
            },
        ))
    }

    fn report(
        status: &ServiceStatusHandle,
        state: ServiceState,
        exit_code: ServiceExitCode,
        wait_hint: Duration,
    ) {
        let controls_accepted = if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        };
        let checkpoint = u32::from(matches!(state, ServiceState::StartPending | ServiceState::StopPending));
        let reported = status.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted,
            exit_code,
            checkpoint,
            wait_hint,
            process_id: None,
        });
        if let Err(e) = reported {
            tracing::warn!(error = %e, "cannot report the service's state");
        }
    }

    /// One entry in the Application event log, source customs179 (registered by install).
    fn event_log(error: bool, message: &str) {
        use windows_sys::Win32::System::EventLog::{
            DeregisterEventSource, EVENTLOG_ERROR_TYPE, EVENTLOG_INFORMATION_TYPE, RegisterEventSourceW,
            ReportEventW,
        };
        let source: Vec<u16> = SERVICE_NAME.encode_utf16().chain([0]).collect();
        let text: Vec<u16> = message.encode_utf16().chain([0]).collect();
        let kind = if error { EVENTLOG_ERROR_TYPE } else { EVENTLOG_INFORMATION_TYPE };
        // SAFETY: both strings are NUL-terminated UTF-16 that outlive the calls; the
        // handle is checked before use and closed once.
        unsafe {
            let log = RegisterEventSourceW(std::ptr::null(), source.as_ptr());
            if log.is_null() {
                return;
            }
            let strings = [text.as_ptr()];
            ReportEventW(log, kind, 0, 0, std::ptr::null_mut(), 1, 0, strings.as_ptr(), std::ptr::null());
            DeregisterEventSource(log);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_folder_is_under_program_data() {
        assert_eq!(data_dir(Some(OsStr::new(r"D:\Data"))), PathBuf::from(r"D:\Data\customs179"));
        assert_eq!(data_dir(Some(OsStr::new(r"D:\Data\"))), PathBuf::from(r"D:\Data\customs179"));
        assert_eq!(data_dir(None), PathBuf::from(r"C:\ProgramData\customs179"));
        assert_eq!(data_dir(Some(OsStr::new(""))), PathBuf::from(r"C:\ProgramData\customs179"));
    }

    #[test]
    fn the_configuration_defaults_to_the_data_folder_and_is_made_absolute() {
        let default = config_path(None, Some(OsStr::new(r"C:\ProgramData"))).unwrap();
        assert_eq!(default, PathBuf::from(r"C:\ProgramData\customs179\customs179.toml"));
        let given = config_path(Some(Path::new("conf/customs179.toml")), None).unwrap();
        assert!(given.is_absolute(), "{}", given.display());
        assert_eq!(given, std::env::current_dir().unwrap().join("conf/customs179.toml"));
    }

    #[test]
    fn the_service_runs_serve_with_its_configuration() {
        let config = std::path::absolute("customs 179.toml").unwrap();
        let args = launch_arguments(&config);
        assert_eq!(args[..3], ["service", "run", "--config"].map(OsString::from));
        assert_eq!(args[3], config.as_os_str());
        assert_eq!(args.len(), 4);
        // The arguments parse back as the hidden run command with the same file.
        let command = std::iter::once(OsString::from("customs179")).chain(args);
        let cli = <super::super::Cli as clap::Parser>::try_parse_from(command).unwrap();
        let super::super::Command::Service(parsed) = cli.command else { panic!("not service") };
        assert_eq!((parsed.action, parsed.config), (Action::Run, Some(config)));
    }

    #[test]
    fn the_service_logs_to_files_unless_configured_otherwise() {
        assert_eq!(service_log(LogTo::Stderr), LogTo::Files { dir: PathBuf::from("logs"), max_files: 30 });
        let own = LogTo::Files { dir: PathBuf::from(r"E:\logs"), max_files: 7 };
        assert_eq!(service_log(own.clone()), own);
    }

    #[test]
    fn the_folder_is_left_to_system_and_administrators() {
        let args = folder_acl_arguments(Path::new(r"C:\ProgramData\customs179"));
        assert_eq!(args[0], r"C:\ProgramData\customs179");
        assert!(args.contains(&OsString::from("/inheritance:r")), "{args:?}");
        let grants: Vec<_> = args.iter().filter_map(|a| a.to_str()).filter(|a| a.starts_with('*')).collect();
        assert_eq!(grants, ["*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F"]);
    }

    #[test]
    fn the_event_source_is_registered_and_removed_under_one_key() {
        let add = event_source_arguments(true);
        let delete = event_source_arguments(false);
        assert_eq!((add[0].to_str(), delete[0].to_str()), (Some("add"), Some("delete")));
        assert_eq!(add[1], delete[1]);
        assert!(add[1].to_str().unwrap().ends_with(r"\Application\customs179"));
        let data = add.iter().position(|a| a == "/d").unwrap() + 1;
        assert!(add[data].to_str().unwrap().starts_with("%SystemRoot%"), "expanded by Windows, not here");
    }

    #[test]
    fn the_service_works_in_its_configuration_folder() {
        assert_eq!(working_dir(Path::new("/etc/customs179/c.toml")).unwrap(), Path::new("/etc/customs179"));
        assert!(working_dir(Path::new("c.toml")).is_err());
    }
}
