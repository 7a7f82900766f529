// Draws every <div class="plot"> from the JSON block next to it. A failure is written into the
// page and to the console (the browser test watches the console); when every plot has settled
// the body gets data-plots-done, which tests wait for.
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
