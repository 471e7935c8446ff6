//! EC2 Query requests on arbitrary bytes: the form parser, the decoder under
//! every operation's schema (with the request's own Action, and forced to each
//! operation), the service table reading what decodes, and the XML writer on
//! what came in (decoded members as each operation's response, values in an
//! error document): never a panic, and every XML document is well-formed.
#![no_main]
use ebsim::server::{ec2, query};
use libfuzzer_sys::fuzz_target;

fn well_formed(xml: &str) {
    let mut r = quick_xml::Reader::from_str(xml);
    r.config_mut().check_end_names = true;
    loop {
        match r.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("not well-formed ({e}): {xml}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(params) = query::parse_form(data) else {
        return;
    };
    if let Ok((op, json)) = ec2::decode(&params) {
        let _ = ebsim::service::ec2::Ec2Request::from_json(op.name, json.clone());
        well_formed(&ec2::encode(op, "r", &json).xml);
    }
    for op in ec2::OPERATIONS {
        if let Ok(json) = query::decode(&params, op.input, query::Flavour::Ec2) {
            let _ = ebsim::service::ec2::Ec2Request::from_json(op.name, json.clone());
            well_formed(&ec2::encode(op, "r", &json).xml);
        }
    }
    for (k, v) in params.iter().take(4) {
        well_formed(&query::ec2_error(k, v, v));
    }
});
