//! A TCP proxy (socat) in front of the test PostgreSQL server, for tests that cut
//! a node off its store: freeze it (SIGSTOP) and thaw it (SIGCONT).

use std::process::Command;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::wait_until;

/// A TCP proxy (socat) in front of the test PostgreSQL server that the test can
/// freeze (SIGSTOP: connections stall with no error, as behind a hung middlebox)
/// and thaw.
pub struct FreezableProxy {
    child: std::process::Child,
    port: u16,
    /// The server's `host:port` the proxy forwards to.
    target: String,
}

impl FreezableProxy {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let target = {
            let admin = orch_test_support::pg_admin_url();
            let host_port = admin.split('@').nth(1).and_then(|r| r.split('/').next()).unwrap_or("127.0.0.1:5432");
            host_port.to_owned()
        };
        use std::os::unix::process::CommandExt;
        let child = Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg(format!("TCP:{target}"))
            .process_group(0)
            .spawn()
            .expect("socat is needed for this test (Debian package socat; scripts/test installs it)");
        wait_until("the proxy to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        Self { child, port, target }
    }

    /// `url` (a database on the test server) reached through the proxy instead.
    pub fn url_for(&self, url: &str) -> String {
        url.replacen(&self.target, &format!("127.0.0.1:{}", self.port), 1)
    }

    pub fn signal(&self, sig: Signal) {
        nix::sys::signal::killpg(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGCONT);
        let _ = nix::sys::signal::killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}
