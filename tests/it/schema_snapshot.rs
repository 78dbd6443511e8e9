use std::fs;

use crate::harness::{run, xtask, Pg};

#[test]
fn two_snapshots_of_the_same_database_are_identical() {
    let pg = Pg::start(15);
    pg.load_fixture("netpoint");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.sql"), dir.path().join("b.sql"));
    for out in [&a, &b] {
        run(xtask(&["schema-snapshot", "--source", &pg.url("netpoint"), "--output", out.to_str().unwrap()])).ok();
    }
    let (a, b) = (fs::read_to_string(a).unwrap(), fs::read_to_string(b).unwrap());
    assert_eq!(a, b);
    assert!(a.contains("CREATE TABLE public.dcim_site"));
    assert!(!a.contains("\\restrict") && !a.contains("Dumped from") && !a.contains("Dumped by"));
}
