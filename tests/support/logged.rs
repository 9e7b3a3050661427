//! A child process whose stderr the test reads while it runs, for tests that assert on what
//! baton logs (errors, warnings, the lines an operator meets).

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// A child whose stderr is collected as it comes; killed when the test ends, passed or not.
pub struct Logged {
    /// The process.
    pub child: Child,
    /// Everything it wrote to stderr so far; the reader thread holds the other reference
    /// until the pipe closes.
    pub stderr: Arc<Mutex<String>>,
}

impl Logged {
    /// Spawns `command` with stdout discarded and stderr collected on a thread, so a child that
    /// logs a lot never blocks on a full pipe.
    pub fn spawn(command: &mut Command) -> Logged {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn baton");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Logged { child, stderr }
    }

    /// What the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
