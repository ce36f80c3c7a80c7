"""Grid Engine (Son of Grid Engine, Univa/Altair GE): what its commands print, read into the
package's terms. Not registered as a backend yet (issue 18)."""
