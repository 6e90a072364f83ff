// anyscope dashboard: the little that needs a script — replaying a
// catchment over time and zooming the maps. Pages work without it. No
// inline handlers: listeners are attached here, and text from the network
// only ever goes into textContent or attribute values.
(function () {
  'use strict';

  var GREY = '#9e9e9e';

  // The map's vantage point dots by name: elements carrying data-vp, else
  // the shapes inside the links to /vantage-points/NAME.
  function dotsOf(svg) {
    var byName = new Map();
    svg.querySelectorAll('[data-vp]').forEach(function (el) {
      var name = el.getAttribute('data-vp');
      if (!byName.has(name)) byName.set(name, []);
      byName.get(name).push(el);
    });
    if (byName.size > 0) return byName;
    svg.querySelectorAll('a').forEach(function (a) {
      var href = a.getAttribute('href') || a.getAttribute('xlink:href') || '';
      var m = /^\/vantage-points\/([^/?#]+)$/.exec(href);
      if (!m) return;
      var name = decodeURIComponent(m[1]);
      if (!byName.has(name)) byName.set(name, []);
      byName.get(name).push(a);
    });
    return byName;
  }

  // recolour paints a dot (or the shapes of a group or link).
  function recolour(el, colour, absent) {
    var shapes = /^(circle|ellipse|path|rect|polygon)$/i.test(el.tagName) ? [el] : el.querySelectorAll('circle, ellipse, path, rect, polygon');
    shapes.forEach(function (s) {
      s.setAttribute('fill', colour);
      s.style.fill = colour;
    });
    el.classList.toggle('absent', absent);
  }

  function isoSeconds(ms) {
    return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
  }

  function replay(box) {
    var slider = document.getElementById('replay');
    var out = document.getElementById('replay-at');
    var status = document.getElementById('replay-status');
    var play = document.getElementById('replay-play');
    var svg = box.querySelector('.map svg');
    if (!slider || !out || !status) return;
    var since = Date.parse(box.dataset.since);
    var step = Number(box.dataset.step) * 1000;
    if (!isFinite(since) || !(step > 0)) return;
    var dots = svg ? dotsOf(svg) : new Map();
    var seq = 0;
    var pending = null;
    var timer = null;

    function show(i) {
      var at = isoSeconds(since + i * step);
      out.textContent = at;
      var mine = ++seq;
      var q = new URLSearchParams({ at: at });
      if (box.dataset.address) q.set('address', box.dataset.address);
      status.textContent = 'loading…';
      fetch('/data/targets/' + encodeURIComponent(box.dataset.target) + '/catchment?' + q.toString(), {
        headers: { Accept: 'application/json' }, credentials: 'same-origin'
      }).then(function (res) {
        if (!res.ok) throw new Error('HTTP ' + res.status);
        return res.json();
      }).then(function (data) {
        if (mine !== seq) return; // a later position won
        var site = new Map();
        (data.vantage_points || []).forEach(function (v) { site.set(v.name, v.site); });
        var colors = data.colors || {};
        dots.forEach(function (els, name) {
          var s = site.get(name);
          els.forEach(function (el) {
            recolour(el, s ? (colors[s] || GREY) : GREY, !s);
            if (el.hasAttribute('data-site')) el.setAttribute('data-site', s || '');
          });
        });
        var n = (data.vantage_points || []).length;
        status.textContent = data.window
          ? 'window ' + data.window.start + ' – ' + data.window.end + ' · ' + n + ' vantage points'
          : 'no catchment stored at or before this time';
      }).catch(function (err) {
        if (mine === seq) status.textContent = 'cannot load: ' + err.message;
      });
    }

    slider.addEventListener('input', function () {
      clearTimeout(pending);
      pending = setTimeout(function () { show(Number(slider.value)); }, 150);
    });
    if (play) {
      play.addEventListener('click', function () {
        if (timer) {
          clearInterval(timer);
          timer = null;
          play.textContent = 'play';
          return;
        }
        if (Number(slider.value) >= Number(slider.max)) slider.value = '0';
        play.textContent = 'pause';
        show(Number(slider.value));
        timer = setInterval(function () {
          if (Number(slider.value) >= Number(slider.max)) {
            clearInterval(timer);
            timer = null;
            play.textContent = 'play';
            return;
          }
          slider.value = String(Number(slider.value) + 1);
          show(Number(slider.value));
        }, 1200);
      });
    }
  }

  // zoom: buttons scale the map's viewBox about its centre; dragging pans.
  function zoom(box) {
    var svg = box.querySelector('.map svg');
    if (!svg) return;
    var b = svg.viewBox && svg.viewBox.baseVal;
    var home;
    if (b && b.width > 0) {
      home = [b.x, b.y, b.width, b.height];
    } else {
      var w = parseFloat(svg.getAttribute('width')), h = parseFloat(svg.getAttribute('height'));
      if (!(w > 0 && h > 0)) return;
      home = [0, 0, w, h];
    }
    var vb = home.slice();
    function set() { svg.setAttribute('viewBox', vb.join(' ')); }
    function scale(f) {
      var cx = vb[0] + vb[2] / 2, cy = vb[1] + vb[3] / 2;
      vb[2] = Math.min(home[2] * 4, Math.max(home[2] / 32, vb[2] * f));
      vb[3] = vb[2] * home[3] / home[2];
      vb[0] = cx - vb[2] / 2;
      vb[1] = cy - vb[3] / 2;
      set();
    }
    box.querySelectorAll('[data-zoom]').forEach(function (btn) {
      btn.addEventListener('click', function () {
        var z = btn.dataset.zoom;
        if (z === 'in') scale(0.5);
        else if (z === 'out') scale(2);
        else { vb = home.slice(); set(); }
      });
    });
    var drag = null, moved = false;
    svg.addEventListener('pointerdown', function (e) {
      drag = { x: e.clientX, y: e.clientY, vb: vb.slice() };
      moved = false;
    });
    svg.addEventListener('pointermove', function (e) {
      if (!drag) return;
      var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (!moved && Math.abs(dx) + Math.abs(dy) < 4) return;
      if (!moved) {
        moved = true;
        svg.classList.add('dragging');
        svg.setPointerCapture(e.pointerId);
      }
      var k = vb[2] / svg.clientWidth;
      vb[0] = drag.vb[0] - dx * k;
      vb[1] = drag.vb[1] - dy * k;
      set();
    });
    function end() {
      drag = null;
      svg.classList.remove('dragging');
    }
    svg.addEventListener('pointerup', end);
    svg.addEventListener('pointercancel', end);
    // A drag that ends on a dot is not a click on its link.
    svg.addEventListener('click', function (e) {
      if (moved) {
        e.preventDefault();
        e.stopPropagation();
        moved = false;
      }
    }, true);
  }

  document.addEventListener('DOMContentLoaded', function () {
    document.querySelectorAll('.mapbox').forEach(zoom);
    var box = document.getElementById('catchment');
    if (box) replay(box);
  });
})();
