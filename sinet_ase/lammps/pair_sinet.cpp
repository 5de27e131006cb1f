// pair_style sinet: see pair_sinet.h for what it computes and how the graph is built.

#include "pair_sinet.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <dlfcn.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <unordered_map>

using namespace LAMMPS_NS;

namespace {

// the package format written by sinet_ase.deploy.export_model
const char *FORMAT_NAME = "sinet-ase-lammps";
const int FORMAT_VERSION = 2;
// the two dummy nodes that pad every graph come first (sinet_ase.deploy.pad_graph)
const int DUMMIES = 2;

std::string first_line(const std::string &text)
{
  return text.substr(0, text.find('\n'));
}

// The file that defines `symbol` as the dynamic linker binds it for libraries loaded after
// the executable, or "" if none does.
std::string library_defining(const char *symbol)
{
  Dl_info info;
  void *address = dlsym(RTLD_DEFAULT, symbol);
  if (address == nullptr || dladdr(address, &info) == 0 || info.dli_fname == nullptr) return "";
  return info.dli_fname;
}

// The file libtorch's CPU operators live in.
std::string torch_cpu_library()
{
  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(&at::set_num_threads), &info) == 0 || info.dli_fname == nullptr) return "";
  return info.dli_fname;
}

}    // namespace

PairSINet::PairSINet(LAMMPS *lmp) : Pair(lmp)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;    // the virial comes from the edge vectors (see compute)
  // graph sizes of this process, for `compute pair sinet` (summed over processes): nodes,
  // edges of the embedding's list, edges of the layers' lists together, edges into local atoms
  nextra = 4;
  memory->create(pvector, nextra, "pair:pvector");
  for (int k = 0; k < nextra; k++) pvector[k] = 0.0;
}

PairSINet::~PairSINet()
{
  memory->destroy(pvector);
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
}

void PairSINet::allocate()
{
  allocated = 1;
  const int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  memory->create(cutghost, n, n, "pair:cutghost");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
}

void PairSINet::settings(int narg, char ** /*arg*/)
{
  if (narg != 0)
    error->all(FLERR, "pair_style sinet takes no arguments (the model comes with pair_coeff * * model.pt2 ...)");
}

void PairSINet::load_model(const std::string &path)
{
  if (!std::ifstream(path).good())
    error->all(FLERR,
               "pair_style sinet: cannot read the model file '{}' ({}); make one with "
               "`sinet-lammps-export model.pt {}`",
               path, utils::getsyserror(), path);
  try {
    model = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path);
  } catch (const std::exception &err) {
    error->all(FLERR,
               "pair_style sinet: '{}' is not a loadable AOTInductor package ({}); export the "
               "model again with `sinet-lammps-export` on this machine",
               path, first_line(err.what()));
  }
  auto metadata = model->get_metadata();
  if (metadata["format"] != FORMAT_NAME)
    error->all(FLERR,
               "pair_style sinet: '{}' is an AOTInductor package but not a sinet-ase model "
               "(written by sinet_ase.deploy.export_model)",
               path);
  if (std::stoi(metadata["format_version"]) > FORMAT_VERSION)
    error->all(FLERR,
               "pair_style sinet: '{}' has format version {}, newer than this plugin reads "
               "({}); rebuild the plugin with `sinet-lammps-build`",
               path, metadata["format_version"], FORMAT_VERSION);
  if (std::stoi(metadata["format_version"]) < FORMAT_VERSION)
    error->all(FLERR,
               "pair_style sinet: '{}' has format version {}, older than this plugin reads "
               "({}); export the model again with `sinet-lammps-export`",
               path, metadata["format_version"], FORMAT_VERSION);
  model_path = path;
  elements = utils::split_words(metadata["elements"]);
  cutoff = std::stod(metadata["cutoff"]);
  num_layers = std::stoi(metadata["num_layers"]);
  model_dtype = metadata["dtype"];
  compiled_threads = metadata.count("num_threads") ? std::stoi(metadata["num_threads"]) : 0;
  if (std::stoi(metadata["num_edge_lists"]) != num_layers + 1)
    error->all(FLERR, "pair_style sinet: '{}' has inconsistent metadata (num_edge_lists)", path);
}

// pair_coeff * * model.pt2 El_1 ... El_ntypes
void PairSINet::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg < 3 || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_style sinet needs `pair_coeff * * model.pt2 El_1 ... El_{}`", ntypes);
  if (strcmp(arg[2], "sinet") == 0 && !std::ifstream(arg[2]).good())
    error->all(FLERR,
               "pair_coeff * * sinet ...: the style name belongs only after pair_style hybrid, "
               "which pair_style sinet does not support; write `pair_coeff * * model.pt2 El_1 ... El_{}`",
               ntypes);
  load_model(arg[2]);
  if (narg != 3 + ntypes) {
    error->all(FLERR,
               "pair_coeff * * {} needs one element per atom type: {} types, {} element(s) "
               "given; the model knows {}",
               arg[2], ntypes, narg - 3, utils::join_words(elements, " "));
  }
  species_of_type.assign(ntypes + 1, -1);
  for (int t = 1; t <= ntypes; t++) {
    const std::string symbol = arg[2 + t];
    for (size_t s = 0; s < elements.size(); s++)
      if (elements[s] == symbol) species_of_type[t] = static_cast<int>(s);
    if (species_of_type[t] < 0)
      error->all(FLERR,
                 "pair_coeff: element {} (atom type {}) is not in the model '{}', which "
                 "knows {}",
                 symbol, t, arg[2], utils::join_words(elements, " "));
  }
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;
}

void PairSINet::init_style()
{
  if (!model) error->all(FLERR, "pair_style sinet: no model loaded (pair_coeff * * model.pt2 ...)");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR,
               "pair_style sinet requires `units metal` (its energies are eV and lengths "
               "Angstrom), got units {}",
               update->unit_style);
  if (force->newton_pair == 0)
    error->all(FLERR,
               "pair_style sinet requires `newton on`: forces on ghost atoms are summed "
               "back onto their owners");
  if (atom->tag_enable == 0) error->all(FLERR, "pair_style sinet requires atom IDs");

  int flags = NeighConst::REQ_FULL;
  ghostneigh = 0;
  if (comm->nprocs > 1) {
    // ghosts take part in message passing: they need neighbour lists and a shell deep
    // enough for every step (embedding + num_layers layers)
    if (comm->mode != Comm::SINGLE)
      error->all(FLERR, "pair_style sinet requires comm_modify mode single");
    ghostneigh = 1;
    flags |= NeighConst::REQ_GHOST;
    const double depth = (num_layers + 1) * cutoff + neighbor->skin;
    if (comm->get_comm_cutoff() < depth) {
      comm->cutghostuser = depth;
      if (comm->me == 0)
        utils::logmesg(lmp,
                       "pair_style sinet: communication cutoff raised to {:.4} Angstrom "
                       "((num_layers + 1) x cutoff + skin, num_layers = {})\n",
                       depth, num_layers);
    }
  }
  neighbor->add_request(this, flags);
  // ATen's own operators in the model use as many threads as LAMMPS gives each process
  // (OMP_NUM_THREADS / -pk omp); the compiled kernels use the count they were exported for
  at::set_num_threads(comm->nthreads);
  if (compiled_threads > 0 && compiled_threads != comm->nthreads && comm->me == 0)
    error->warning(FLERR,
                   "pair_style sinet: the model was compiled for {} thread(s) per process, LAMMPS "
                   "runs {}; export it with `sinet-lammps-export --threads {}` to match",
                   compiled_threads, comm->nthreads, comm->nthreads);
  // liblammps defines the reference BLAS dgemm_ and comes before libtorch in the linker's
  // global scope, so libtorch's float64 matrix products bind to it unless libtorch is
  // preloaded (sinet_ase.lammps.torch_cpu_library)
  const std::string blas = library_defining("dgemm_"), torch_cpu = torch_cpu_library();
  if (comm->me == 0 && !blas_warned && model_dtype == "float64" && !blas.empty() && blas != torch_cpu) {
    blas_warned = true;
    error->warning(FLERR,
                   "pair_style sinet: the BLAS routine dgemm_ comes from {}, not from libtorch, so the "
                   "float64 model's matrix products run in a slow reference BLAS; start LAMMPS with "
                   "LD_PRELOAD={} (sinet-lammps-build prints the environment)",
                   blas, torch_cpu);
  }
}

double PairSINet::init_one(int i, int j)
{
  if (setflag[i][j] == 0) error->all(FLERR, "pair_style sinet: pair_coeff * * has not been set");
  cutghost[i][j] = cutghost[j][i] = cutoff;
  return cutoff;
}

/* The graph of this step (see pair_sinet.h): a breadth-first walk from the local atoms
   over edges shorter than the cutoff, up to num_layers hops, so that edges come sorted by
   the hop distance of their receiver and nodes by their own hop distance. One node per
   atom ID: the periodic images of an atom (of this process's or another's) are one node,
   reached first, and expanded, at its smallest hop distance. */
void PairSINet::build_graph()
{
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  double **x = atom->x;
  tagint *tag = atom->tag;
  const double cutoff_sq = cutoff * cutoff;

  // nodes 0 and 1 are the dummies (see compute), then the local atoms
  std::unordered_map<tagint, int> node_of_tag;
  node_of_tag.reserve(2 * static_cast<size_t>(nlocal));
  node_of_atom.assign(nall, -1);
  atom_of_node.assign(DUMMIES, -1);
  for (int i = 0; i < nlocal; i++) {
    node_of_atom[i] = static_cast<int>(atom_of_node.size());
    node_of_tag[tag[i]] = node_of_atom[i];
    atom_of_node.push_back(i);
  }
  nodes_within_hops.assign(1, static_cast<long>(atom_of_node.size()));

  edge_receiver.clear();
  edge_sender.clear();
  edge_atom_i.clear();
  edge_atom_j.clear();
  edge_vector.clear();
  edges_within_hops.clear();
  std::vector<int> frontier(list->ilist, list->ilist + list->inum), next;
  for (int hops = 0; hops <= num_layers; hops++) {
    next.clear();
    for (int i : frontier) {
      const int *neighbours = list->firstneigh[i];
      const int count = list->numneigh[i];
      for (int jj = 0; jj < count; jj++) {
        const int j = neighbours[jj] & NEIGHMASK;
        const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
        if (dx * dx + dy * dy + dz * dz >= cutoff_sq) continue;
        if (node_of_atom[j] < 0) {    // a ghost reached for the first time: a new node unless its atom is one
          auto found = node_of_tag.try_emplace(tag[j], static_cast<int>(atom_of_node.size()));
          node_of_atom[j] = found.first->second;
          if (found.second) {
            atom_of_node.push_back(j);
            if (hops < num_layers) next.push_back(j);
          }
        }
        edge_receiver.push_back(node_of_atom[i]);
        edge_sender.push_back(node_of_atom[j]);
        edge_atom_i.push_back(i);
        edge_atom_j.push_back(j);
        edge_vector.insert(edge_vector.end(), {dx, dy, dz});
      }
    }
    edges_within_hops.push_back(static_cast<long>(edge_receiver.size()));
    nodes_within_hops.push_back(static_cast<long>(atom_of_node.size()));
    frontier.swap(next);
  }
}

void PairSINet::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  for (int k = 0; k < nextra; k++) pvector[k] = 0.0;
  if (atom->nlocal == 0) return;
  if (comm->nprocs > 1 && !list->ghost)
    error->one(FLERR, "pair_style sinet: the neighbour list has no ghost neighbours");
  build_graph();

  const int nlocal = atom->nlocal;
  const long num_edges = static_cast<long>(edge_receiver.size());
  // two dummy nodes joined both ways by edges longer than the cutoff come first, so that
  // every size is at least 2 (the exported shapes); their messages are exactly zero and
  // their energies do not count (sinet_ase.deploy.pad_graph)
  const long num_nodes = static_cast<long>(atom_of_node.size());
  auto long_options = at::TensorOptions().dtype(at::kLong);
  auto double_options = at::TensorOptions().dtype(at::kDouble);

  at::Tensor species = at::empty({num_nodes}, long_options);
  at::Tensor local = at::zeros({num_nodes}, double_options);
  {
    auto s = species.accessor<int64_t, 1>();
    auto l = local.accessor<double, 1>();
    int *type = atom->type;
    s[0] = s[1] = 0;
    for (long n = DUMMIES; n < num_nodes; n++) s[n] = species_of_type[type[atom_of_node[n]]];
    for (long n = DUMMIES; n < DUMMIES + nlocal; n++) l[n] = 1.0;
  }
  at::Tensor index = at::empty({2, num_edges + 2}, long_options);
  at::Tensor vectors = at::empty({num_edges + 2, 3}, double_options);
  {
    auto ix = index.accessor<int64_t, 2>();
    auto v = vectors.accessor<double, 2>();
    ix[0][0] = 0;
    ix[1][0] = 1;
    ix[0][1] = 1;
    ix[1][1] = 0;
    v[0][0] = 2.0 * cutoff;
    v[1][0] = -2.0 * cutoff;
    for (int c = 1; c < 3; c++) v[0][c] = v[1][c] = 0.0;
    for (long e = 0; e < num_edges; e++) {
      ix[0][e + 2] = edge_receiver[e];
      ix[1][e + 2] = edge_sender[e];
      for (int c = 0; c < 3; c++) v[e + 2][c] = edge_vector[3 * e + c];
    }
  }
  // edge list t >= 1 holds the edges whose receiver is within num_layers - t hops, and step t
  // updates the nodes within that many hops (a prefix of the nodes); list 0 (the
  // embedding's) every edge into a node within num_layers hops
  std::vector<long> list_size(num_layers + 1), updated(num_layers + 1);
  for (int t = 0; t <= num_layers; t++) {
    const int hops = t == 0 ? num_layers : num_layers - t;
    list_size[t] = 2 + edges_within_hops[hops];
    updated[t] = nodes_within_hops[hops];
  }
  at::Tensor receivers = at::arange(updated[0], long_options);
  pvector[0] = static_cast<double>(num_nodes - 2);
  pvector[1] = static_cast<double>(list_size[0] - 2);
  for (int t = 1; t <= num_layers; t++) pvector[2] += static_cast<double>(list_size[t] - 2);
  pvector[3] = static_cast<double>(edges_within_hops[0]);
  std::vector<at::Tensor> inputs = {species, local};
  for (int t = 0; t <= num_layers; t++) {
    inputs.push_back(index.narrow(1, 0, list_size[t]).contiguous());
    inputs.push_back(vectors.narrow(0, 0, list_size[t]));
    inputs.push_back(receivers.narrow(0, 0, updated[t]));
  }

  std::vector<at::Tensor> outputs;
  try {
    outputs = model->run(inputs);
  } catch (const std::exception &err) {
    error->one(FLERR, "pair_style sinet: the model failed on this step: {}", first_line(err.what()));
  }

  // dE/dr of each edge: the sum over the lists it belongs to
  std::vector<double> grad(3 * num_edges, 0.0);
  for (int t = 0; t <= num_layers; t++) {
    at::Tensor g = outputs[2 + t].contiguous();
    const double *gp = g.data_ptr<double>();
    for (long e = 0; e < list_size[t] - 2; e++)
      for (int c = 0; c < 3; c++) grad[3 * e + c] += gp[3 * (e + 2) + c];
  }

  double **f = atom->f;
  for (long e = 0; e < num_edges; e++) {
    const int i = edge_atom_i[e], j = edge_atom_j[e];
    const double *g = &grad[3 * e];
    for (int c = 0; c < 3; c++) {
      f[i][c] += g[c];    // r = x_j - x_i: F_i = +dE/dr, F_j = -dE/dr
      f[j][c] -= g[c];
    }
    if (vflag_either) {
      // W = -r (x) dE/dr, in LAMMPS's order xx, yy, zz, xy, xz, yz
      const double *r = &edge_vector[3 * e];
      const double w[6] = {-r[0] * g[0], -r[1] * g[1], -r[2] * g[2],
                           -r[0] * g[1], -r[0] * g[2], -r[1] * g[2]};
      for (int k = 0; k < 6; k++) {
        if (vflag_global) virial[k] += w[k];
        if (vflag_atom) {
          vatom[i][k] += 0.5 * w[k];
          vatom[j][k] += 0.5 * w[k];
        }
      }
    }
  }

  if (eflag_global) eng_vdwl += outputs[0].item<double>();
  if (eflag_atom) {
    at::Tensor energies = outputs[1].contiguous();
    const double *ep = energies.data_ptr<double>();
    for (int i = 0; i < nlocal; i++) eatom[i] += ep[DUMMIES + i];
  }
}
