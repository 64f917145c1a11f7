"""The HTML, CSS and plain JavaScript of the page `t2v_nb.page` writes (no Python logic beyond filling it in).

The page reads one JSON object (`<script type="application/json" id="t2v-data">`) and draws every view
from sprite sheets: one image per view and step, frames side by side (and, for views with several rows,
one row per part: the guidance parts, the prompt's words). A step or frame slider move picks a rectangle
of an image the browser has already decoded and draws it on a canvas; nothing is fetched, ever (the page's
Content-Security-Policy forbids every request but `data:` images).
"""

from __future__ import annotations

import html

__all__ = ["render"]

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px auto;max-width:1200px;
 padding:0 14px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 6px;border-bottom:1px solid #ddd}
.t2v-sub{color:#555;margin:0 0 10px}
.t2v-missing{background:#fff6e0;color:#750;padding:6px 10px;border-radius:4px;margin:8px 0}
.t2v-missing li{margin:2px 0}
.t2v-controls{position:sticky;top:0;background:#fafafa;border:1px solid #ddd;padding:8px 10px;z-index:2;
 display:flex;flex-wrap:wrap;gap:10px 18px;align-items:center}
.t2v-controls label{display:flex;align-items:center;gap:6px}
.t2v-controls input[type=range]{width:260px}
.t2v-controls button{font:inherit;padding:2px 10px}
#t2v-info{font-variant-numeric:tabular-nums;color:#333}
.t2v-views{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
figure{margin:0;max-width:300px}figcaption{font-size:12px;color:#444}
figcaption b{color:#222}
canvas{display:block;background:#eee;border:1px solid #ccc}
.t2v-note{font-size:12px;color:#666}
#t2v-strip{cursor:pointer;max-width:100%}
details{margin:6px 0}pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}
table.t2v-summary td{padding:1px 10px 1px 0;vertical-align:top}
"""

JS = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("t2v-data").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var stepIn = $("t2v-step"), frameIn = $("t2v-frame"), images = {}, views = {}, timer = null, stepTimer = null;
  var SIDE = 200;  // display size of a frame's longest side, in CSS pixels
  D.views.forEach(function (v) { views[v.key] = v; });

  function image(url) {
    var im = images[url];
    if (!im) {
      im = new Image();
      im.onload = function () {  // decode once, now, and keep the pixels: a slider move then only copies them
        if (window.createImageBitmap) { createImageBitmap(im).then(function (b) { im.bitmap = b; }, function () {}); }
        draw();
      };
      im.src = url; images[url] = im;
    }
    return im;
  }
  function ready(im) { return im.complete && im.naturalWidth > 0; }
  function keys(v) { if (!v.keys) { v.keys = Object.keys(v.sprites).map(Number).sort(function (a, b) { return a - b; }); } return v.keys; }
  function nearest(v, s) {  // the step with a picture closest to s (earlier on a tie); views like "decoded" skip steps
    if (v.still) { return -1; }
    if (v.sprites[s] !== undefined) { return s; }
    var best = null;
    keys(v).forEach(function (k) { if (best === null || Math.abs(k - s) < Math.abs(best - s)) { best = k; } });
    return best;
  }
  function frameOf(v, f) { return Math.min(v.latent ? D.latent_index[f] : f, v.frames - 1); }
  function scaleOf(v) { return Math.max(1, v.smooth ? SIDE / Math.max(v.w, v.h) : Math.floor(SIDE / Math.max(v.w, v.h))); }

  function blit(ctx, v, s, f, row, w, h, x, y) {
    var im = image(v.sprites[s]);
    if (!ready(im)) { return false; }
    ctx.imageSmoothingEnabled = !!v.smooth;
    ctx.drawImage(im.bitmap || im, frameOf(v, f) * v.w, row * v.h, v.w, v.h, x || 0, y || 0, w, h);
    return true;
  }

  function makeCanvas(v, row, box, name, explain) {  // a canvas sized for view v, with its caption (as text)
    var k = scaleOf(v), fig = document.createElement("figure"), c = document.createElement("canvas");
    c.width = Math.round(v.w * k); c.height = Math.round(v.h * k);
    c.className = "t2v-canvas"; c.dataset.view = v.key; c.dataset.row = row;
    var cap = document.createElement("figcaption"), b = document.createElement("b"), at = document.createElement("span");
    b.textContent = name; at.className = "t2v-at";
    cap.appendChild(b); cap.appendChild(document.createTextNode(" ")); cap.appendChild(at);
    if (explain) { cap.appendChild(document.createElement("br")); cap.appendChild(document.createTextNode(explain)); }
    fig.appendChild(c); fig.appendChild(cap); box.appendChild(fig);
    return c;
  }

  function build() {
    D.views.forEach(function (v) {
      var box = $("t2v-box-" + v.group);
      if (!box || v.key === "words") { return; }
      for (var r = 0; r < v.rows; r++) {
        var name = v.row_labels ? v.row_labels[r] : v.label;
        v["canvas" + r] = makeCanvas(v, r, box, name, v.row_explain ? v.row_explain[r] : v.explain);
      }
    });
    var w = views.words;
    if (w) {
      var base = views.x0 || views.decoded || w;
      for (var r = 0; r < w.rows; r++) {
        w["canvas" + r] = makeCanvas(base, r, $("t2v-box-words"), w.row_labels[r], "");
        w["canvas" + r].dataset.view = "words";
      }
    }
    var strip = $("t2v-strip"), sv = stripView();
    if (strip && sv) {
      var k = Math.max(1, Math.min(4, Math.floor(96 / Math.max(sv.w, sv.h))));
      strip.width = D.num_frames * (sv.w * k + 2); strip.height = sv.h * k + 4;
      strip.onclick = function (e) {
        var r = strip.getBoundingClientRect(), f = Math.floor((e.clientX - r.left) / r.width * D.num_frames);
        frameIn.value = Math.max(0, Math.min(D.num_frames - 1, f)); draw();
      };
    }
  }
  function stripView() { return views.decoded || views.x0 || views.xt || null; }

  var LUT = (function () {  // the colour map's stops (from matplotlib's "turbo"), interpolated to 256 entries
    var out = [], stops = D.colormap, n = stops.length - 1;
    for (var i = 0; i < 256; i++) {
      var x = i / 255 * n, j = Math.min(Math.floor(x), n - 1), a = x - j, p = stops[j], q = stops[j + 1];
      out.push([0, 1, 2].map(function (c) { return Math.round(p[c] + a * (q[c] - p[c])); }));
    }
    return out;
  })();
  var heatCache = {};
  function heat(w, s, f, row) {  // one word's map, coloured, as a small canvas (alpha = attention)
    var key = s + "/" + f + "/" + row;
    if (heatCache[key]) { return heatCache[key]; }
    var im = image(w.sprites[s]);
    if (!ready(im)) { return null; }
    var c = document.createElement("canvas"); c.width = w.w; c.height = w.h;
    var ctx = c.getContext("2d");
    ctx.drawImage(im, frameOf(w, f) * w.w, row * w.h, w.w, w.h, 0, 0, w.w, w.h);
    var px = ctx.getImageData(0, 0, w.w, w.h), d = px.data;
    for (var i = 0; i < d.length; i += 4) {
      var rgb = LUT[d[i]]; d[i] = rgb[0]; d[i + 1] = rgb[1]; d[i + 2] = rgb[2]; d[i + 3] = 150;
    }
    ctx.putImageData(px, 0, 0);
    heatCache[key] = c;
    return c;
  }

  function drawWords(s, f) {
    var w = views.words;
    if (!w) { return; }
    var ws = nearest(w, s), base = (views.decoded && views.decoded.sprites[s] !== undefined) ? views.decoded : (views.x0 || views.decoded || null);
    for (var r = 0; r < w.rows; r++) {
      var c = w["canvas" + r], ctx = c.getContext("2d");
      if (base) { blit(ctx, base, nearest(base, s), f, 0, c.width, c.height); }
      var h = heat(w, ws, f, r);
      if (h) { ctx.imageSmoothingEnabled = true; ctx.drawImage(h, 0, 0, c.width, c.height); }
      c.dataset.step = ws; c.dataset.frame = frameOf(w, f);
    }
  }

  function drawStrip(s, f) {
    var strip = $("t2v-strip"), v = stripView();
    if (!strip || !v) { return; }
    var ctx = strip.getContext("2d"), cw = strip.width / D.num_frames, vs = nearest(v, s);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, strip.width, strip.height);
    for (var i = 0; i < D.num_frames; i++) {
      blit(ctx, v, vs, i, 0, cw - 2, strip.height - 4, i * cw + 1, 2);
    }
    ctx.strokeStyle = "#e22"; ctx.lineWidth = 2; ctx.strokeRect(f * cw + 1, 1, cw - 2, strip.height - 2);
  }

  function info(s) {
    var st = D.steps[s], text = "step " + s + " (of 0\u2013" + (D.total - 1) + ")" + " \u00b7 timestep t = " + st.t +
      " \u00b7 " + D.noise_name + " = " + st.noise.toFixed(3);
    if (D.guidance) { text += " \u00b7 guidance " + (st.guided ? "on" : "off at this step"); }
    $("t2v-info").textContent = text;
    var m = $("t2v-marker");
    if (m) { m.setAttribute("cx", st.x); m.setAttribute("cy", st.y); }
  }

  function draw() {
    var s = +stepIn.value, f = +frameIn.value;
    $("t2v-step-out").textContent = s; $("t2v-frame-out").textContent = f;
    info(s);
    D.views.forEach(function (v) {
      if (v.key === "words") { return; }
      var vs = nearest(v, s);
      for (var r = 0; r < v.rows; r++) {
        var c = v["canvas" + r];
        if (!c) { continue; }
        if (blit(c.getContext("2d"), v, vs, f, r, c.width, c.height)) { c.dataset.step = vs; c.dataset.frame = frameOf(v, f); }
        var at = c.parentNode.querySelector(".t2v-at");
        if (at) { at.textContent = v.still ? "" : (vs === s ? "" : "(nearest: step " + vs + ")"); }
      }
    });
    drawWords(s, f);
    drawStrip(s, f);
    document.body.dataset.drawn = s + "/" + f;
  }

  function play(btn, which) {
    var on = which === "frame" ? timer : stepTimer;
    if (on) { clearInterval(on); if (which === "frame") { timer = null; } else { stepTimer = null; } btn.textContent = btn.dataset.label; return; }
    btn.textContent = "\u23f8 pause";
    var id = setInterval(function () {
      if (which === "frame") { frameIn.value = (+frameIn.value + 1) % D.num_frames; }
      else if (+stepIn.value >= +stepIn.max) { play(btn, which); return; }
      else { stepIn.value = +stepIn.value + 1; }
      draw();
    }, which === "frame" ? 1000 / D.fps : 250);
    if (which === "frame") { timer = id; } else { stepTimer = id; }
  }

  build();
  stepIn.addEventListener("input", draw);
  frameIn.addEventListener("input", draw);
  $("t2v-play").onclick = function () { play(this, "frame"); };
  $("t2v-play-steps").onclick = function () { if (+stepIn.value >= +stepIn.max) { stepIn.value = 0; } play(this, "step"); };
  D.views.forEach(function (v) { Object.keys(v.sprites).forEach(function (k) { image(v.sprites[k]); }); });  // decode all now
  draw();
})();
"""


def render(*, title: str, data_json: str, subtitle: str, missing: list[str], sections: list[tuple[str, str]],
           num_steps: int, num_frames: int) -> str:
    """The whole page. `sections` are (heading, HTML) pairs placed after the views; `data_json` is already
    safe inside a <script> element (every "<" written as \\u003c)."""
    esc = html.escape
    missing_html = ("<ul class='t2v-missing'>" + "".join(f"<li>{esc(m)}</li>" for m in missing) + "</ul>"
                    if missing else "")
    controls = (
        "<div class='t2v-controls'>"
        f"<label>step <input id='t2v-step' type='range' min='0' max='{num_steps - 1}' value='{num_steps - 1}'>"
        "<output id='t2v-step-out'></output></label>"
        f"<label>frame <input id='t2v-frame' type='range' min='0' max='{num_frames - 1}' value='0'>"
        "<output id='t2v-frame-out'></output></label>"
        "<button id='t2v-play' data-label='\u25b6 play frames'>\u25b6 play frames</button>"
        "<button id='t2v-play-steps' data-label='\u25b6 play steps'>\u25b6 play steps</button>"
        "<span id='t2v-info'></span></div>")
    body = "".join(f"<h2>{esc(h)}</h2>{content}" for h, content in sections)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1><p class='t2v-sub'>{subtitle}</p>{missing_html}{controls}"
        "<noscript><p class='t2v-missing'>This page draws its pictures with JavaScript, which is off here: "
        "turn it on to see the run.</p></noscript>"
        f"{body}<script type='application/json' id='t2v-data'>{data_json}</script>"
        f"<script>{JS}</script></body></html>")
