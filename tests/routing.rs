//! Routing: longest path prefix on a segment boundary, per-host routes from
//! the config file, and 404 for what no route takes.

use crate::util::{get, TestDir};

fn two_trees(t: &TestDir) {
    t.write("a/who.txt", "tree a\n");
    t.write("a/only-a.txt", "only in a\n");
    t.write("b/who.txt", "tree b\n");
    t.write("c/who.txt", "tree c\n");
}

#[test]
fn longest_prefix_wins_on_segment_boundaries() {
    let t = TestDir::new();
    two_trees(&t);
    t.write("a/assetsx/who.txt", "assetsx in a\n");
    let s = t.serve(&[
        "--static",
        "/=a",
        "--static",
        "/assets=b",
        "--static",
        "/assets/deep=c",
    ]);
    let body = |p: &str| {
        let r = get(s.addr, p, &[]);
        assert_eq!(r.status, 200, "{p}\n{}", s.logs());
        r.text()
    };
    assert_eq!(body("/who.txt"), "tree a\n");
    assert_eq!(body("/assets/who.txt"), "tree b\n");
    assert_eq!(body("/assets/deep/who.txt"), "tree c\n");
    assert_eq!(body("/assetsx/who.txt"), "assetsx in a\n");
    // The prefix is stripped: b has no only-a.txt.
    assert_eq!(get(s.addr, "/assets/only-a.txt", &[]).status, 404);
}

#[test]
fn routes_per_host_from_the_config_file() {
    let t = TestDir::new();
    two_trees(&t);
    t.write(
        "p.toml",
        "[[route]]\npath = \"/\"\nstatic = \"a\"\n\
         [[route]]\nhost = \"example.com\"\npath = \"/\"\nstatic = \"b\"\n\
         [[route]]\nhost = \"example.com\"\npath = \"/c\"\nstatic = \"c\"\n",
    );
    let s = t.serve(&["-c", "p.toml", "-b", "127.0.0.1:0"]);
    let who = |host: &str, path: &str| {
        let r = get(s.addr, path, &[("host", host)]);
        (r.status, r.text())
    };
    assert_eq!(who("example.com", "/who.txt"), (200, "tree b\n".into()));
    assert_eq!(
        who("EXAMPLE.com:8080", "/who.txt"),
        (200, "tree b\n".into())
    );
    assert_eq!(who("example.com", "/c/who.txt"), (200, "tree c\n".into()));
    assert_eq!(who("other.org", "/who.txt"), (200, "tree a\n".into()));
    assert_eq!(who("localhost", "/c/who.txt").0, 404);
    // HTTP/2 carries the host in :authority.
    let r = crate::util::client::get_h2c(s.addr, "/who.txt");
    assert_eq!(r.text(), "tree a\n");
}

#[test]
fn unrouted_path_is_404() {
    let t = TestDir::new();
    two_trees(&t);
    let s = t.serve(&["--static", "/assets=a"]);
    let r = get(s.addr, "/who.txt", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("server"), Some("portico"));
    assert_eq!(
        get(s.addr, "/assets/who.txt", &[]).status,
        200,
        "{}",
        s.logs()
    );
}

#[test]
fn host_only_routes_leave_other_hosts_unrouted() {
    let t = TestDir::new();
    two_trees(&t);
    t.write(
        "p.toml",
        "[[route]]\nhost = \"example.com\"\npath = \"/\"\nstatic = \"b\"\n",
    );
    let s = t.serve(&["-c", "p.toml", "-b", "127.0.0.1:0"]);
    assert_eq!(
        get(s.addr, "/who.txt", &[("host", "other.org")]).status,
        404
    );
    assert_eq!(
        get(s.addr, "/who.txt", &[("host", "example.com")]).status,
        200
    );
}
