//! The script's whole environment: the shared meta-variables
//! (`gateway_env`) plus what only CGI has.
//!
//! Steps, in order:
//! 1. `SCRIPT_NAME` = route prefix + the script's path below it; the
//!    shared variables from `gateway_env::meta_variables`;
//! 2. `GATEWAY_INTERFACE`, `SCRIPT_FILENAME`, `DOCUMENT_ROOT` (the CGI
//!    directory: a CGI route has no other document root),
//!    `PATH_TRANSLATED` (only with a `PATH_INFO`: the directory + it);
//! 3. `PATH` from the route's `cgi_path`. Nothing else: portico's own
//!    environment never reaches a script.

use std::os::unix::ffi::OsStrExt;

use super::lookup::Script;
use crate::config::CgiOptions;
use crate::request::gateway_env::{meta_variables, GatewayRequest, Mapping, Var};
use crate::request::HandlerContext;

pub fn build(
    req: &GatewayRequest<'_>,
    script: &Script,
    opts: &CgiOptions,
    ctx: &HandlerContext<'_>,
    content_length: Option<u64>,
) -> Vec<Var> {
    // 1.
    let mut script_name = ctx.script_name.as_bytes().to_vec();
    script_name.extend_from_slice(&script.name);
    let map = Mapping {
        script_name: &script_name,
        path_info: &script.path_info,
        content_length,
        pass_authorization: opts.pass_authorization,
    };
    let mut vars = meta_variables(req, &map, ctx);
    // 2.
    let mut set = |name: &str, value: &[u8]| vars.push((name.to_string(), value.to_vec()));
    set("GATEWAY_INTERFACE", b"CGI/1.1");
    set("SCRIPT_FILENAME", script.path.as_os_str().as_bytes());
    let root = opts.dir.as_os_str().as_bytes();
    set("DOCUMENT_ROOT", root);
    if !script.path_info.is_empty() {
        let mut translated = root.to_vec();
        translated.extend_from_slice(&script.path_info);
        set("PATH_TRANSLATED", &translated);
    }
    // 3.
    set("PATH", opts.path_env.as_bytes());
    vars
}
