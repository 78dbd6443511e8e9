//! libpq's own ways of naming a server, against a real one: a `service` read from the
//! service file (`PGSERVICEFILE`) and `hostaddr`, in URLs and in the keyword form; the masked
//! display and the same-database guard with them; and the variables that would steer the
//! tools elsewhere than the URL says.

use std::fs;

use crate::harness::{run, xtask, Pg};

fn devices(pg: &Pg, db: &str) -> String {
    pg.psql(db, "select count(*) from dcim_device")
}

#[test]
fn services_and_hostaddr_reach_the_server_libpq_would() {
    let pg = Pg::start(15);
    pg.load_fixture("prod");
    let (port, password) = (pg.port, pg.password.clone());
    let dir = tempfile::tempdir().unwrap();
    let services = dir.path().join("pg_service.conf");
    fs::write(
        &services,
        format!(
            "# the team's services\n[netpoint-prod]\nhost=127.0.0.1\nport={port}\nuser=postgres\n\
             password={password}\ndbname=prod\napplication_name=netpoint-clone\n\n\
             [netpoint-dev]\nhost=localhost\nport={port}\nuser=postgres\npassword={password}\n"
        ),
    )
    .unwrap();
    let clone = |source: &str, target: &str| {
        let mut cmd = xtask(&["clone-prod", "--yes"]);
        cmd.env("PGSERVICEFILE", &services)
            .env("NETPOINT_PROD_DATABASE_URL", source)
            .env("NETPOINT_DATABASE_URL", target);
        cmd
    };

    // A service in the keyword form and in a URL that names the database itself.
    let cloned = run(clone(
        "service=netpoint-prod",
        "postgres:///dev?service=netpoint-dev",
    ))
    .ok();
    assert_eq!(devices(&pg, "dev"), devices(&pg, "prod"));
    for shown in [
        format!("postgres://postgres:***@127.0.0.1:{port}/prod"),
        format!("postgres://postgres:***@localhost:{port}/dev"),
    ] {
        assert!(cloned.stderr.contains(&shown), "{shown}: {}", cloned.stderr);
    }
    assert!(!cloned.output().contains(&password), "{}", cloned.output());

    // `hostaddr`: a host name nobody resolves, connected to at the address given.
    let by_address = format!(
        "host=db.invalid hostaddr=127.0.0.1 port={port} user=postgres password='{password}' dbname=dev2"
    );
    let cloned = run(clone("service=netpoint-prod", &by_address)).ok();
    assert_eq!(devices(&pg, "dev2"), devices(&pg, "prod"));
    assert!(
        cloned.stderr.contains(&format!(
            "postgres://postgres:***@db.invalid:{port}/dev2?hostaddr=127.0.0.1"
        )),
        "{}",
        cloned.stderr
    );
    assert!(!cloned.output().contains(&password), "{}", cloned.output());

    // The same database named through a service and through hostaddr is still refused.
    pg.psql(
        "prod",
        "create table kept (id int); insert into kept values (1)",
    );
    let same = format!("postgres://postgres:{password}@db.invalid:{port}/prod?hostaddr=127.0.0.1");
    let refused = run(clone("service=netpoint-prod", &same))
        .fails_with("source and target are the same database");
    assert!(
        !refused.output().contains(&password),
        "{}",
        refused.output()
    );
    assert_eq!(pg.psql("prod", "select count(*) from kept"), "1");

    // Variables that would send the tools elsewhere are not followed: PGSERVICE names
    // production (its settings would override the rest), PGHOSTADDR an address nobody has.
    let mut steered = clone("service=netpoint-prod", &pg.url("dev3"));
    steered
        .env("PGSERVICE", "netpoint-prod")
        .env("PGHOSTADDR", "192.0.2.1");
    run(steered).ok();
    assert_eq!(devices(&pg, "dev3"), devices(&pg, "prod"));
    assert_eq!(pg.psql("prod", "select count(*) from kept"), "1");

    // A service that is not there, and a file libpq would not read: one line each.
    run(clone("service=nosuch", &pg.url("dev4"))).fails_with(&format!(
        "service `nosuch` is not defined in {}: add a [nosuch] section",
        services.display()
    ));
    fs::write(&services, "[netpoint-prod]\nhost = 127.0.0.1\n").unwrap();
    run(clone("service=netpoint-prod", &pg.url("dev4"))).fails_with(&format!(
        "{}:2: unknown parameter `host ` in service `netpoint-prod`",
        services.display()
    ));
    assert!(!pg.databases().iter().any(|d| d.starts_with("dev4")));
}
