//! A LAN with no way out: hosts with addresses but no default route (an isolated network with
//! its own server). Two `burrow` peers and the server there must still connect.

use burrow_tests::burrow::Burrow;
use burrow_tests::sandbox::{self, HOST_IP};
use burrow_tests::server::ServerProcess;

#[test]
fn peers_connect_on_a_lan_without_a_default_route() {
    if !sandbox::enter("peers_connect_on_a_lan_without_a_default_route") {
        return;
    }
    // The sandbox's network has a default route (browsers need one); this LAN has none.
    burrow_tests::lab::ip("route del default");
    let server = ServerProcess::start_on(HOST_IP, &[]);
    let link = server.room_link("isolated");
    let mut a = Burrow::start(&["join", &link]);
    let ida = a.peer_id();
    let mut b = Burrow::start(&["join", &link]);
    let idb = b.peer_id();
    let conn = a.expect_event("connected", &[("peer", &idb)]);
    assert_eq!(conn["path"], "direct_lan", "{conn}");
    b.expect_event("connected", &[("peer", &ida)]);
    a.say("no route needed");
    let got = b.expect_event("chat", &[("from", &ida)]);
    assert_eq!(got["text"], "no route needed");
    assert!(
        !a.stderr().contains("No such device"),
        "stderr: {}",
        a.stderr()
    );
}
