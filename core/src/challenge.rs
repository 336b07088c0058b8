//! The PlayReady licence challenge, as the gate reads it: the token a
//! player put in the SOAP challenge's `CustomData`
//! (`soap:Envelope/soap:Body/AcquireLicense/challenge/Challenge/LA/CustomData`).
//!
//! The XML is read by `quick-xml`'s pull parser, which borrows from the
//! body: no DTD is read and no entity is expanded except the five XML
//! predefines and character references (which a licence server's parser
//! decodes as well, so the gate reads the token it will read). A body with
//! a `<!DOCTYPE`, an entity it does not know, an XML declaration of an
//! encoding other than UTF-8, or anything that is not
//! well-formed UTF-8 XML (one root element, nothing but white space,
//! comments and processing instructions around it) is refused: the gate
//! cannot say which token a licence server would find in it. Every element named `CustomData`
//! counts, wherever it is and whatever its namespace prefix; a challenge
//! with two is refused.

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;
use quick_xml::Reader;
use std::fmt;

/// Why a challenge was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChallengeError {
    /// Not well-formed UTF-8 XML, a `<!DOCTYPE`, an unknown entity, or
    /// markup inside `CustomData`.
    Malformed,
    /// Two or more `CustomData` elements.
    TwoTokens,
}

impl fmt::Display for ChallengeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => {
                "the licence challenge is not well-formed XML (or has a DTD or an unknown entity)"
            }
            Self::TwoTokens => "the licence challenge has more than one CustomData",
        })
    }
}

impl std::error::Error for ChallengeError {}

/// The most nested elements a challenge may have (a real one has some
/// ten): deeper is refused, so no body makes the reader's work grow
/// beyond its length.
const MAX_DEPTH: usize = 64;

/// The text of the one `CustomData` of `body` (trimmed of XML white
/// space; `None` when there is none or it is empty).
pub fn custom_data(body: &[u8]) -> Result<Option<String>, ChallengeError> {
    let text = std::str::from_utf8(body).map_err(|_| ChallengeError::Malformed)?;
    // a UTF-8 byte order mark, as .NET's encoder writes one, is no text
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.allow_unmatched_ends = false;
    config.check_comments = true;
    let mut walk = Walk::default();
    // Each event consumes input: the loop ends by the body's length.
    loop {
        match reader.read_event().map_err(|_| ChallengeError::Malformed)? {
            Event::Eof => return walk.finish(),
            event => walk.step(event)?,
        }
    }
}

/// Where the reader is in the document.
#[derive(Default)]
struct Walk {
    depth: usize,
    /// The document's one root element has begun.
    rooted: bool,
    /// Inside `CustomData`: its text so far.
    inside: Option<String>,
    /// The `CustomData` read.
    found: Option<String>,
}

impl Walk {
    fn step(&mut self, event: Event<'_>) -> Result<(), ChallengeError> {
        match event {
            Event::Start(start) => {
                self.open(start.local_name().into_inner())?;
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(ChallengeError::Malformed);
                }
                if is_custom_data(start.local_name().into_inner()) {
                    self.inside = Some(String::new());
                }
                Ok(())
            }
            Event::Empty(start) => {
                self.open(start.local_name().into_inner())?;
                if is_custom_data(start.local_name().into_inner()) {
                    self.found = Some(String::new());
                }
                Ok(())
            }
            Event::End(_) => {
                self.depth = self.depth.checked_sub(1).ok_or(ChallengeError::Malformed)?;
                if let Some(text) = self.inside.take() {
                    self.found = Some(text);
                }
                Ok(())
            }
            Event::Text(t) => self.text(&t.xml10_content(), true),
            Event::CData(c) => self.text(&c.xml10_content(), false),
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => resolve_predefined_entity(&r.xml10_content())
                        .ok_or(ChallengeError::Malformed)?
                        .to_owned(),
                    Err(_) => return Err(ChallengeError::Malformed),
                };
                self.text(&resolved, false)
            }
            Event::DocType(_) => Err(ChallengeError::Malformed),
            // the body is read as UTF-8: a document that says it is in
            // another encoding could read otherwise to a licence server
            Event::Decl(decl) => match decl.encoding() {
                None => Ok(()),
                Some(Ok(name)) if name.eq_ignore_ascii_case("utf-8") => Ok(()),
                Some(_) => Err(ChallengeError::Malformed),
            },
            Event::Comment(_) | Event::PI(_) | Event::Eof => Ok(()),
        }
    }

    /// An element begins: never inside `CustomData`, never a second root,
    /// never a second `CustomData`.
    fn open(&mut self, local_name: &str) -> Result<(), ChallengeError> {
        if self.inside.is_some() || (self.depth == 0 && self.rooted) {
            return Err(ChallengeError::Malformed);
        }
        self.rooted = true;
        if is_custom_data(local_name) && self.found.is_some() {
            return Err(ChallengeError::TwoTokens);
        }
        Ok(())
    }

    /// Character data (`white_space_outside`: white space is allowed
    /// outside the root element, as for text; never for CDATA or a
    /// reference).
    fn text(&mut self, content: &str, white_space_outside: bool) -> Result<(), ChallengeError> {
        if self.depth == 0 && !(white_space_outside && is_white_space(content)) {
            return Err(ChallengeError::Malformed);
        }
        if let Some(text) = self.inside.as_mut() {
            text.push_str(content);
        }
        Ok(())
    }

    fn finish(self) -> Result<Option<String>, ChallengeError> {
        if self.depth != 0 || self.inside.is_some() || !self.rooted {
            return Err(ChallengeError::Malformed);
        }
        // trimmed in place: a token as players write it has nothing to trim
        Ok(self.found.and_then(|mut text| {
            let start = text.len() - text.trim_start_matches(XML_WHITE_SPACE).len();
            text.truncate(text.trim_end_matches(XML_WHITE_SPACE).len());
            text.drain(..start.min(text.len()));
            (!text.is_empty()).then_some(text)
        }))
    }
}

/// XML's white space characters.
const XML_WHITE_SPACE: [char; 4] = [' ', '\t', '\r', '\n'];

fn is_white_space(text: &str) -> bool {
    text.chars().all(|c| XML_WHITE_SPACE.contains(&c))
}

fn is_custom_data(local_name: &str) -> bool {
    local_name == "CustomData"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A challenge as a PlayReady CDM builds it (abridged), with
    /// `custom_data` in its `CustomData`.
    pub(crate) fn challenge(custom_data: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><AcquireLicense xmlns="http://schemas.microsoft.com/DRM/2007/03/protocols"><challenge><Challenge xmlns="http://schemas.microsoft.com/DRM/2007/03/protocols/messages"><LA xmlns="http://schemas.microsoft.com/DRM/2007/03/protocols" Id="SignedData" xml:space="preserve"><Version>1</Version><ContentHeader><WRMHEADER xmlns="http://schemas.microsoft.com/DRM/2007/03/PlayReadyHeader" version="4.0.0.0"><DATA><PROTECTINFO><KEYLEN>16</KEYLEN><ALGID>AESCTR</ALGID></PROTECTINFO><KID>AAAAAAAAAAAAAAAAAAAAAA==</KID></DATA></WRMHEADER></ContentHeader>{custom_data}<LicenseNonce>abc=</LicenseNonce></LA><Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignatureValue>xyz=</SignatureValue></Signature></Challenge></challenge></AcquireLicense></soap:Body></soap:Envelope>"#
        )
    }

    #[test]
    fn reads_the_token_of_a_challenge() {
        let body = challenge("<CustomData>AQx-y_z</CustomData>");
        assert_eq!(custom_data(body.as_bytes()), Ok(Some("AQx-y_z".into())));
        // entities, character references, CDATA and white space, as an XML
        // parser of a licence server reads them
        for written in [
            "<CustomData>\n  AQx-y_z \r\n</CustomData>",
            "<CustomData>AQx&#45;y_z</CustomData>",
            "<CustomData>AQx&#x2d;y_z</CustomData>",
            "<CustomData><![CDATA[AQx-y_z]]></CustomData>",
            "<CustomData>AQ<!-- a comment -->x-y_z</CustomData>",
            "<p:CustomData xmlns:p=\"urn:x\">AQx-y_z</p:CustomData>",
        ] {
            let body = challenge(written);
            assert_eq!(
                custom_data(body.as_bytes()),
                Ok(Some("AQx-y_z".into())),
                "{written}"
            );
        }
        assert_eq!(
            custom_data(challenge("<CustomData>a&amp;b</CustomData>").as_bytes()),
            Ok(Some("a&b".into()))
        );
        // a byte order mark, and a declaration of UTF-8 in any case
        let bom = format!(
            "\u{FEFF}{}",
            challenge("<CustomData>t</CustomData>").replace("utf-8", "UTF-8")
        );
        assert_eq!(custom_data(bom.as_bytes()), Ok(Some("t".into())));
    }

    #[test]
    fn no_custom_data_is_no_token() {
        for written in ["", "<CustomData/>", "<CustomData>  </CustomData>"] {
            let body = challenge(written);
            assert_eq!(custom_data(body.as_bytes()), Ok(None), "{written}");
        }
    }

    #[test]
    fn two_tokens_are_refused() {
        for written in [
            "<CustomData>a</CustomData><CustomData>a</CustomData>",
            "<CustomData>a</CustomData><CustomData/>",
        ] {
            let body = challenge(written);
            assert_eq!(
                custom_data(body.as_bytes()),
                Err(ChallengeError::TwoTokens),
                "{written}"
            );
        }
        // anywhere in the body
        let body = challenge("<CustomData>a</CustomData>").replace(
            "<Version>1</Version>",
            "<Version><CustomData>b</CustomData></Version>",
        );
        assert_eq!(custom_data(body.as_bytes()), Err(ChallengeError::TwoTokens));
    }

    #[test]
    fn dtds_entities_and_broken_xml_are_refused() {
        let billion_laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><CustomData>&lol2;</CustomData>"#;
        let external = r#"<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><CustomData>&x;</CustomData>"#;
        for body in [
            billion_laughs.to_owned(),
            external.to_owned(),
            challenge("<CustomData>&unknown;</CustomData>"),
            challenge("<CustomData>a<b/>c</CustomData>"),
            challenge("<CustomData>a</Custom>"),
            challenge("<CustomData>a"),
            challenge("<CustomData>&#0;</CustomData>").replace("&#0;", "&#xZZ;"),
            "<a></b>".to_owned(),
            "<a>".to_owned(),
            "</a>".to_owned(),
            "".to_owned(),
            "\x08\x01binary".to_owned(),
            "<a/><b/>".to_owned(),
            "<a/>text".to_owned(),
            "&amp;<a/>".to_owned(),
        ] {
            assert_eq!(
                custom_data(body.as_bytes()),
                Err(ChallengeError::Malformed),
                "{body}"
            );
        }
        assert_eq!(custom_data(b"<a>\xff</a>"), Err(ChallengeError::Malformed));
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert_eq!(custom_data(deep.as_bytes()), Err(ChallengeError::Malformed));
    }
}
