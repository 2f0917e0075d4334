// Fills the time zone field with the browser's own, but only on a fresh form: a value the
// person typed (kept after a mistake) is never replaced. The page works without this file.
(function () {
  var zone;
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (e) {
    return;
  }
  if (!zone) return;
  var fields = document.querySelectorAll("input[data-detect-timezone]");
  for (var i = 0; i < fields.length; i++) fields[i].value = zone;
})();
