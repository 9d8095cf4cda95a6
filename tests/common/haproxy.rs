//! Debian's HAProxy in front of several `serve` processes, as `deploy/several/` has it.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::free_addr;

/// Debian's HAProxy with the example deployment's own configuration
/// (`deploy/several/haproxy.cfg`), in front of the instances' intakes.
pub struct Haproxy {
    child: Child,
    /// Where customs calls, through the proxy.
    pub url: String,
}

impl Haproxy {
    /// Starts HAProxy (logging to `dir/haproxy.log`) in front of the intakes (`http://host:port`);
    /// both may be the same instance.
    pub fn start(dir: &Path, intakes: [&str; 2]) -> Haproxy {
        let listen = free_addr();
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/several/haproxy.cfg");
        let binary = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .expect("the test needs HAProxy (Debian's haproxy package; .ci/run installs it)");
        let [a, b] = intakes.map(|intake| intake.trim_start_matches("http://").to_owned());
        let child = Command::new(binary)
            .args(["-db", "-f"])
            .arg(&config)
            .env("INTAKE_LISTEN", listen.to_string())
            .env("INSTANCE_A", a)
            .env("INSTANCE_B", b)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
            .spawn()
            .unwrap();
        Haproxy { child, url: format!("http://{listen}/platDataOpen") }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
