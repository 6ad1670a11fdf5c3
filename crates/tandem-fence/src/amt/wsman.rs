//! WS-Management (DMTF DSP0226) messages as Intel AMT understands them:
//! SOAP 1.2 envelopes with WS-Addressing (2004/08) headers, and the
//! decoding of answers and SOAP faults.

use std::fmt;

/// SOAP 1.2 envelope namespace.
pub(crate) const NS_SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
/// WS-Addressing (the 2004/08 submission WS-Management 1.x uses).
pub(crate) const NS_WSA: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
/// WS-Management.
pub(crate) const NS_WSMAN: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd";
/// The anonymous reply-to address.
pub(crate) const ANONYMOUS: &str =
    "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous";
/// WS-Transfer Get.
pub(crate) const ACTION_GET: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get";
/// Prefix of the DMTF CIM classes' resource URIs.
pub(crate) const CIM: &str = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/";

/// One WS-Management request.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    /// The `wsa:Action` URI.
    pub action: String,
    /// The `wsman:ResourceURI`.
    pub resource_uri: String,
    /// `wsman:SelectorSet` entries (name, value).
    pub selectors: &'a [(&'a str, &'a str)],
    /// The body's content (XML), empty for a Get.
    pub body: String,
}

/// Escapes text for XML content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// A `wsman:SelectorSet` element (prefix `w`).
pub(crate) fn selector_set(selectors: &[(&str, &str)]) -> String {
    let mut s = String::from("<w:SelectorSet>");
    for (n, v) in selectors {
        s.push_str(&format!(
            "<w:Selector Name=\"{}\">{}</w:Selector>",
            esc(n),
            esc(v)
        ));
    }
    s.push_str("</w:SelectorSet>");
    s
}

/// A fresh `uuid:` message ID (random, version 4 layout).
pub(crate) fn message_id() -> String {
    let mut b = [0u8; 16];
    for x in b.iter_mut() {
        *x = fastrand::u8(..);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = super::digest::to_hex(&b);
    format!(
        "uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The SOAP envelope of `req`, addressed `to`, with `message_id`.
/// Prefixes: `s` SOAP, `a` addressing, `w` WS-Management.
pub(crate) fn envelope(to: &str, message_id: &str, req: &Request<'_>) -> String {
    let selectors = if req.selectors.is_empty() {
        String::new()
    } else {
        selector_set(req.selectors)
    };
    let body = if req.body.is_empty() {
        "<s:Body/>".to_string()
    } else {
        format!("<s:Body>{}</s:Body>", req.body)
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<s:Envelope xmlns:s=\"{NS_SOAP}\" xmlns:a=\"{NS_WSA}\" xmlns:w=\"{NS_WSMAN}\">\
<s:Header>\
<a:Action s:mustUnderstand=\"true\">{action}</a:Action>\
<a:To s:mustUnderstand=\"true\">{to}</a:To>\
<w:ResourceURI s:mustUnderstand=\"true\">{resource}</w:ResourceURI>\
<a:MessageID s:mustUnderstand=\"true\">{message_id}</a:MessageID>\
<a:ReplyTo><a:Address s:mustUnderstand=\"true\">{ANONYMOUS}</a:Address></a:ReplyTo>\
<w:MaxEnvelopeSize s:mustUnderstand=\"true\">153600</w:MaxEnvelopeSize>\
<w:OperationTimeout>PT60S</w:OperationTimeout>\
{selectors}\
</s:Header>{body}</s:Envelope>",
        action = esc(&req.action),
        to = esc(to),
        resource = esc(&req.resource_uri),
    )
}

/// A SOAP fault, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault {
    /// `Sender` or `Receiver`.
    pub code: String,
    /// The WS-Management / WS-Addressing subcode's local name, e.g.
    /// `AccessDenied`.
    pub subcode: Option<String>,
    /// The device's reason text.
    pub reason: Option<String>,
    /// `wsman:FaultDetail` or other detail text.
    pub detail: Option<String>,
}

impl Fault {
    /// Whether the fault says the user may not do this.
    pub fn is_access_denied(&self) -> bool {
        self.subcode.as_deref() == Some("AccessDenied")
    }
}

/// What a fault subcode means, in words.
fn explain_subcode(s: &str) -> Option<&'static str> {
    Some(match s {
        "AccessDenied" => "the user's rights (AMT realms) do not allow this",
        "ActionNotSupported" => "the device does not support this action",
        "DestinationUnreachable" => "the device has no such resource",
        "InvalidSelectors" => "the device has no instance matching the selectors",
        "SchemaValidationError" => "the device rejected the message's structure",
        "InvalidParameter" => "a parameter was rejected",
        "InternalError" => "the device had an internal error",
        "TimedOut" => "the device did not finish the operation in time",
        "Concurrency" => "the device is busy with a conflicting operation",
        "EncodingLimit" => "the message exceeds a device limit",
        "InvalidMessageInformationHeader" => "a WS-Addressing header was rejected",
        "MessageInformationHeaderRequired" => "a required WS-Addressing header is missing",
        "CannotProcessFilter" => "the device cannot process the filter",
        "UnsupportedFeature" => "the device does not support a requested feature",
        _ => return None,
    })
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WS-Management fault")?;
        if let Some(s) = &self.subcode {
            write!(f, " {s}")?;
        }
        write!(f, " ({})", self.code)?;
        if let Some(words) = self.subcode.as_deref().and_then(explain_subcode) {
            write!(f, ": {words}")?;
        }
        if let Some(r) = &self.reason {
            write!(f, "; device says: {r}")?;
        }
        if let Some(d) = &self.detail {
            write!(f, " [{d}]")?;
        }
        Ok(())
    }
}

/// Why an answer could not be used.
#[derive(Debug)]
pub(crate) enum AnswerError {
    /// The device answered with a SOAP fault.
    Fault(Fault),
    /// The answer is not the envelope we expected.
    Malformed(String),
}

/// The local part of a QName text like `wsman:AccessDenied`.
fn local(qname: &str) -> &str {
    qname.rsplit(':').next().unwrap_or(qname).trim()
}

fn child<'a, 'i>(
    n: roxmltree::Node<'a, 'i>,
    ns: &str,
    name: &str,
) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| {
        c.is_element() && c.tag_name().name() == name && c.tag_name().namespace() == Some(ns)
    })
}

fn text_of(n: roxmltree::Node<'_, '_>) -> Option<String> {
    let t: String = n
        .descendants()
        .filter(|d| d.is_text())
        .filter_map(|d| d.text())
        .collect::<Vec<_>>()
        .join(" ");
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    (!t.is_empty()).then_some(t)
}

/// Parses an answer envelope: checks it is SOAP 1.2, that `RelatesTo`
/// (when present) names our `message_id`, decodes a fault, and otherwise
/// hands the body's first element to `f`.
pub(crate) fn decode<T>(
    xml: &str,
    message_id: &str,
    f: impl FnOnce(roxmltree::Node<'_, '_>) -> Result<T, String>,
) -> Result<T, AnswerError> {
    let doc = roxmltree::Document::parse(xml)
        .map_err(|e| AnswerError::Malformed(format!("answer is not XML: {e}")))?;
    let env = doc.root_element();
    if env.tag_name().name() != "Envelope" || env.tag_name().namespace() != Some(NS_SOAP) {
        return Err(AnswerError::Malformed(format!(
            "answer is not a SOAP 1.2 envelope (root element {:?})",
            env.tag_name().name()
        )));
    }
    let body = child(env, NS_SOAP, "Body")
        .ok_or_else(|| AnswerError::Malformed("SOAP answer without Body".into()))?;
    if let Some(fault) = child(body, NS_SOAP, "Fault") {
        let code = child(fault, NS_SOAP, "Code");
        let code_value = code
            .and_then(|c| child(c, NS_SOAP, "Value"))
            .and_then(text_of)
            .map(|v| local(&v).to_string())
            .unwrap_or_else(|| "unknown code".into());
        let subcode = code
            .and_then(|c| child(c, NS_SOAP, "Subcode"))
            .and_then(|s| child(s, NS_SOAP, "Value"))
            .and_then(text_of)
            .map(|v| local(&v).to_string());
        let reason = child(fault, NS_SOAP, "Reason").and_then(text_of);
        let detail = child(fault, NS_SOAP, "Detail").and_then(text_of);
        return Err(AnswerError::Fault(Fault {
            code: code_value,
            subcode,
            reason,
            detail,
        }));
    }
    if let Some(header) = child(env, NS_SOAP, "Header") {
        if let Some(rel) = child(header, NS_WSA, "RelatesTo").and_then(text_of) {
            if rel != message_id {
                return Err(AnswerError::Malformed(format!(
                    "answer relates to message {rel}, not to ours ({message_id})"
                )));
            }
        }
    }
    let first = body
        .children()
        .find(|c| c.is_element())
        .ok_or_else(|| AnswerError::Malformed("SOAP answer with an empty Body".into()))?;
    f(first).map_err(AnswerError::Malformed)
}

/// The text of `el`'s child element `name` (in `el`'s namespace).
pub(crate) fn child_text(el: roxmltree::Node<'_, '_>, name: &str) -> Option<String> {
    let ns = el.tag_name().namespace().unwrap_or("");
    el.children()
        .find(|c| {
            c.is_element()
                && c.tag_name().name() == name
                && c.tag_name().namespace().unwrap_or("") == ns
        })
        .and_then(text_of)
}

/// Every text of `el`'s child elements `name` (in `el`'s namespace).
pub(crate) fn child_texts(el: roxmltree::Node<'_, '_>, name: &str) -> Vec<String> {
    let ns = el.tag_name().namespace().unwrap_or("");
    el.children()
        .filter(|c| {
            c.is_element()
                && c.tag_name().name() == name
                && c.tag_name().namespace().unwrap_or("") == ns
        })
        .filter_map(text_of)
        .collect()
}

/// Checks that `el` is `{ns}name`.
pub(crate) fn expect_element(
    el: roxmltree::Node<'_, '_>,
    ns: &str,
    name: &str,
) -> Result<(), String> {
    if el.tag_name().name() == name && el.tag_name().namespace() == Some(ns) {
        Ok(())
    } else {
        Err(format!(
            "expected {name} in the answer's Body, found {} ({})",
            el.tag_name().name(),
            el.tag_name().namespace().unwrap_or("no namespace")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_decoded_into_words() {
        let xml = format!(
            r#"<s:Envelope xmlns:s="{NS_SOAP}" xmlns:a="{NS_WSA}" xmlns:w="{NS_WSMAN}">
            <s:Header><a:RelatesTo>uuid:1</a:RelatesTo></s:Header>
            <s:Body><s:Fault><s:Code><s:Value>s:Sender</s:Value>
              <s:Subcode><s:Value>w:AccessDenied</s:Value></s:Subcode></s:Code>
              <s:Reason><s:Text xml:lang="en-US">The sender was not authorized to access the resource.</s:Text></s:Reason>
              <s:Detail><w:FaultDetail>realm missing</w:FaultDetail></s:Detail>
            </s:Fault></s:Body></s:Envelope>"#
        );
        let Err(AnswerError::Fault(f)) = decode(&xml, "uuid:1", |_| Ok(())) else {
            panic!("not a fault")
        };
        assert!(f.is_access_denied());
        let s = f.to_string();
        assert!(
            s.contains("AccessDenied (Sender): the user's rights"),
            "{s}"
        );
        assert!(
            s.contains("not authorized") && s.contains("realm missing"),
            "{s}"
        );
    }

    #[test]
    fn relates_to_must_match() {
        let xml = format!(
            r#"<s:Envelope xmlns:s="{NS_SOAP}" xmlns:a="{NS_WSA}"><s:Header><a:RelatesTo>uuid:2</a:RelatesTo></s:Header><s:Body><x/></s:Body></s:Envelope>"#
        );
        assert!(matches!(
            decode(&xml, "uuid:1", |_| Ok(())),
            Err(AnswerError::Malformed(_))
        ));
        assert!(decode(&xml, "uuid:2", |_| Ok(())).is_ok());
        assert!(matches!(
            decode("<x/>", "uuid:2", |_| Ok(())),
            Err(AnswerError::Malformed(_))
        ));
    }

    #[test]
    fn message_ids_are_uuids_and_values_escaped() {
        let id = message_id();
        assert_eq!(id.len(), 41);
        assert_ne!(id, message_id());
        assert_eq!(esc("a<b&\"c\""), "a&lt;b&amp;&quot;c&quot;");
    }
}
