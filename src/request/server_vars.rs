//! What a front server said about itself (`SERVER_NAME`, `SERVER_PORT`
//! of a uwsgi packet), carried as a request extension to the gateways.

/// `SERVER_NAME` / `SERVER_PORT` as the front server sent them; the WSGI
/// environ prefers them over the ones derived from Host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerVars {
    pub name: Option<String>,
    pub port: Option<String>,
}
