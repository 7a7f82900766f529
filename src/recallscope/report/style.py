"""The report's stylesheet and its one plotting script (no external fonts, no network)."""

CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d8dee4; --bg:#ffffff; --band:#f6f8fa; --accent:#1c7ed6; }
* { box-sizing: border-box; }
html { font-size: 14px; }
body { margin: 0; color: var(--fg); background: var(--bg);
       font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif;
       line-height: 1.45; }
header { background: var(--band); border-bottom: 1px solid var(--line); padding: 14px 24px 8px; }
header h1 { font-size: 1.35rem; margin: 0 0 6px; overflow-wrap: anywhere; }
main, footer { max-width: 1320px; margin: 0 auto; padding: 0 24px; }
footer { color: var(--muted); font-size: .85rem; padding: 24px; }
h2 { font-size: 1.2rem; margin: 28px 0 8px; border-bottom: 2px solid var(--accent); padding-bottom: 4px;
     overflow-wrap: anywhere; }
h3 { font-size: 1.05rem; margin: 0 0 8px; }
h3.sub { margin: 16px 0 6px; }
section.stage { border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; margin: 16px 0; }
.wall { font-weight: normal; color: var(--muted); font-size: .85rem; margin-left: 8px;
        background: var(--band); border-radius: 10px; padding: 1px 8px; }
ul.ident { list-style: none; padding: 0; margin: 4px 0 8px; display: flex; flex-wrap: wrap; gap: 4px 18px; }
ul.ident li { overflow-wrap: anywhere; }
.k { color: var(--muted); margin-right: 4px; }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0; }
.tile { background: var(--bg); border: 1px solid var(--line); border-radius: 8px; padding: 6px 14px; min-width: 120px;
        max-width: 100%; overflow-wrap: anywhere; }
.tv { font-size: 1.25rem; font-weight: 600; }
.tk { color: var(--muted); font-size: .8rem; }
.meta { display: flex; flex-wrap: wrap; gap: 4px 20px; }
nav.top, nav.sub { display: flex; flex-wrap: wrap; gap: 4px 14px; margin: 6px 0 4px; font-size: .9rem; }
nav a, a { color: var(--accent); text-decoration: none; }
nav a:hover, a:hover { text-decoration: underline; }
details { margin: 8px 0; }
summary { cursor: pointer; color: var(--muted); font-weight: 600; }
table { border-collapse: collapse; font-size: .9rem; }
.scroll { overflow-x: auto; max-width: 100%; }
table.kv th { text-align: left; font-weight: normal; color: var(--muted); padding: 2px 16px 2px 0; vertical-align: top;
              white-space: nowrap; }
table.kv td { padding: 2px 0; overflow-wrap: anywhere; }
table.grid th, table.grid td { border-bottom: 1px solid var(--line); padding: 3px 10px; text-align: left;
                               vertical-align: top; }
table.grid th { background: var(--band); position: sticky; top: 0; white-space: nowrap; }
table.grid th bdi.s, table.kv th bdi.s { white-space: nowrap; }
.n { white-space: nowrap; font-variant-numeric: tabular-nums; }
.pairs { columns: 3 300px; column-gap: 28px; margin: 8px 0; }
.pair { break-inside: avoid; padding: 1px 0; overflow-wrap: anywhere; }
.pair .k { display: inline-block; min-width: 9em; }
table.grid td { max-width: 32em; overflow-wrap: break-word; font-variant-numeric: tabular-nums; }
/* in a cell, "anywhere" would shrink a column to one character; break-word keeps words whole */
table.grid td bdi.s { overflow-wrap: break-word; }
table.grid td.nw, table.grid td.nw bdi.s { white-space: nowrap; }
bdi.s { unicode-bidi: isolate; white-space: pre-wrap; overflow-wrap: anywhere; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .85rem; }
.cut, .note, .none { color: var(--muted); font-size: .85rem; }
.lead { font-size: 1rem; margin: 4px 0 8px; }
.problem { background: #fff5f5; border: 1px solid #ffc9c9; color: #c92a2a; padding: 6px 10px; border-radius: 6px; }
.figs { display: grid; grid-template-columns: repeat(auto-fit, minmax(540px, 1fr)); gap: 12px; margin: 8px 0; }
.figs.wide { grid-template-columns: 1fr; }
figure.fig { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 6px; min-width: 0; }
figcaption { font-size: .9rem; font-weight: 600; padding: 2px 6px 0; overflow-wrap: anywhere; }
div.plot { width: 100%; height: 360px; }
.verdict { display: inline-block; border-radius: 10px; padding: 1px 10px; font-weight: 600; white-space: nowrap; }
.v-holds { background: #d3f9d8; color: #2b8a3e; }
.v-fails { background: #ffe3e3; color: #c92a2a; }
.v-na { background: #e9ecef; color: #495057; }
.v-other { background: #fff3bf; color: #8f6b00; }
table.claims td:first-child { min-width: 24em; }
@media print { details { display: block; } div.plot { break-inside: avoid; } }
"""

# Draws every <div class="plot"> from the JSON block next to it. A failure is written into the
# page and to the console (the browser test watches the console); when every plot has settled
# the body gets data-plots-done, which tests wait for.
PLOT_SCRIPT = """
(function () {
  var config = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ['sendDataToCloud']};
  var divs = Array.prototype.slice.call(document.querySelectorAll('div.plot'));
  var pending = divs.map(function (div) {
    try {
      var spec = JSON.parse(document.getElementById(div.id + '-json').textContent);
      return Plotly.newPlot(div, spec.data, spec.layout, config).then(function () {
        div.setAttribute('data-rendered', '1');
      }, function (err) {
        div.textContent = 'this plot could not be drawn: ' + err;
        console.error('recallscope report: plot ' + div.id + ' failed: ' + err);
      });
    } catch (err) {
      div.textContent = 'this plot could not be drawn: ' + err;
      console.error('recallscope report: plot ' + div.id + ' failed: ' + err);
      return Promise.resolve();
    }
  });
  Promise.all(pending).then(function () { document.body.setAttribute('data-plots-done', '1'); });
})();
"""
