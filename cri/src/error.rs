//! [`CriError`]: what can go wrong talking to a CRI runtime, always naming the socket and the call.

use std::path::PathBuf;

/// An error of the CRI client or the inventory. Every variant names the socket it was about.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The socket path does not exist: the runtime is not running, or runs elsewhere.
    #[error("CRI socket {} does not exist (is containerd running with its CRI plugin?)", path.display())]
    SocketMissing {
        /// The socket path that was tried.
        path: PathBuf,
    },
    /// The socket exists but the connection failed (nobody listening: ECONNREFUSED; not a
    /// socket; no permission).
    #[error("cannot connect to CRI socket {}: {reason}", path.display())]
    Connect {
        /// The socket path that was tried.
        path: PathBuf,
        /// The innermost cause, as text (the transport error itself only says "transport error").
        reason: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// A CRI call returned an error status.
    #[error("CRI call {call} on {} failed: {}: {}", path.display(), status.code(), status.message())]
    Call {
        /// The RPC, e.g. `ListContainers`.
        call: &'static str,
        /// The socket the call went to.
        path: PathBuf,
        /// The gRPC status (boxed: a status is large and errors travel in `Result`s).
        #[source]
        status: Box<tonic::Status>,
    },
    /// A CRI answer lacked a field the call's contract promises.
    #[error("CRI call {call} on {} answered without {field}", path.display())]
    MissingField {
        /// The RPC.
        call: &'static str,
        /// The socket the call went to.
        path: PathBuf,
        /// The missing field, e.g. `status`.
        field: &'static str,
    },
    /// [`crate::Inventory::start`] was called outside a tokio runtime.
    #[error("the CRI inventory needs a tokio runtime to run its refresh task")]
    NoRuntime,
}

impl CriError {
    /// True for the errors that mean no runtime answers at the socket (missing, refusing, or
    /// the connection broke during the call), as opposed to a runtime that answered with an
    /// error.
    pub fn is_unavailable(&self) -> bool {
        match self {
            CriError::SocketMissing { .. } | CriError::Connect { .. } => true,
            CriError::Call { status, .. } => {
                status.code() == tonic::Code::Unavailable || broke_in_transport(status)
            }
            CriError::MissingField { .. } | CriError::NoRuntime => false,
        }
    }
}

/// True if `status` came from the connection failing (a transport or I/O error in its source
/// chain: containerd 1.6 dying mid-call gives `Unknown` with a connection reset inside), not
/// from the runtime.
fn broke_in_transport(status: &tonic::Status) -> bool {
    let mut cur = std::error::Error::source(status);
    while let Some(err) = cur {
        if err.is::<tonic::transport::Error>() || err.is::<std::io::Error>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The innermost source of `err`, as text: what actually went wrong under a transport error.
pub(crate) fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
