// Markdown in assistant messages: parsed by marked (raw HTML kept as text), then sanitised by
// DOMPurify (both vendored in ../vendor/, see its README), so whatever a model writes becomes inert HTML. The page's policy
// allows neither inline styles nor other origins' images, so those are removed here rather than
// left for the browser to block; links open in a new tab and send no referrer.

import {Marked} from "../vendor/marked.esm.js";
import DOMPurify from "../vendor/purify.es.js";

// Raw HTML in what a model wrote is shown as the text it is, not parsed; DOMPurify is the second line.
const escapeHTML = (text) => text.replace(/[&<>"']/g, (character) =>
  ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[character]);
const parser = new Marked({gfm: true, breaks: false, async: false, renderer: {html: ({text}) => escapeHTML(text)}});

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

const POLICY = {
  USE_PROFILES: {html: true},
  FORBID_TAGS: ["style", "img", "picture", "video", "audio", "source", "form", "input", "button", "textarea", "select"],
  FORBID_ATTR: ["style", "class", "id"],
};

// A node holding `text` rendered as sanitised Markdown.
export function markdownNode(text) {
  const node = document.createElement("div");
  node.className = "markdown";
  node.append(DOMPurify.sanitize(parser.parse(text), {...POLICY, RETURN_DOM_FRAGMENT: true}));
  return node;
}
