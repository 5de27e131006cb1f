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
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <dlfcn.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <unordered_map>

using namespace LAMMPS_NS;

namespace {

// the package format written by sinet_ase.deploy.export_model
const char *FORMAT_NAME = "sinet-ase-lammps";
const int FORMAT_VERSION = 3;
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

// The pair style whose model is running: the halo operators the model calls belong to it.
PairSINet *running = nullptr;

// Outside compute (sinet_ase in the same Python process running an exported package itself)
// the operators do what sinet_ase.ops.halo does without an exchange: every node is computed
// there, so fill copies and collect takes the first rows.
std::runtime_error needs_exchange(long ghosts)
{
  return std::runtime_error("a graph with " + std::to_string(ghosts) +
                            " ghost nodes needs a halo exchange: run the exported model through pair_style sinet");
}

at::Tensor halo_fill(const at::Tensor &rows, int64_t num_nodes)
{
  if (running != nullptr) return running->halo_fill(rows, num_nodes);
  if (num_nodes != rows.size(0)) throw needs_exchange(num_nodes - rows.size(0));
  return rows.clone();
}

at::Tensor halo_collect(const at::Tensor &grad, int64_t num_rows)
{
  if (running != nullptr) return running->halo_collect(grad, num_rows);
  if (num_rows != grad.size(0)) throw needs_exchange(grad.size(0) - num_rows);
  return grad.clone();
}

// The halo exchange operators of sinet_ase.ops.halo, which exported models call. Defined here
// unless the process already has them (LAMMPS driven from a Python process that imported
// sinet_ase, whose definition comes first: a second one would abort the process); the CPU
// kernels are this plugin's either way, replacing sinet_ase's Python ones (torch warns once).
struct HaloOperators {
  std::unique_ptr<torch::Library> def, impl;

  HaloOperators()
  {
    if (!c10::Dispatcher::singleton().findSchema(c10::OperatorName("sinet_halo::fill", "")).has_value()) {
      def = std::make_unique<torch::Library>(torch::Library::FRAGMENT, "sinet_halo", std::nullopt, __FILE__, __LINE__);
      def->def("fill(Tensor rows, SymInt num_nodes) -> Tensor");
      def->def("collect(Tensor grad, SymInt num_rows) -> Tensor");
    }
    impl = std::make_unique<torch::Library>(torch::Library::IMPL, "sinet_halo", c10::DispatchKey::CPU, __FILE__,
                                            __LINE__);
    impl->impl("fill", &halo_fill);
    impl->impl("collect", &halo_collect);
  }
};

const HaloOperators halo_operators;

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
  // the halo exchange moves this many numbers per atom (LAMMPS sizes its buffers by them)
  comm_forward = comm_reverse = std::stoi(metadata["halo_width"]);
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

  // ghosts one cutoff deep (LAMMPS's default shell): their features come by halo exchange
  neighbor->add_request(this, NeighConst::REQ_FULL);
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

/* The graph of this step (see pair_sinet.h): the local atoms, every atom within the cutoff
   of one, and the edges into the local atoms. One node per atom ID: the periodic images
   of an atom (this process's or another's) are one node. */
void PairSINet::build_graph()
{
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  double **x = atom->x;
  tagint *tag = atom->tag;
  const double cutoff_sq = cutoff * cutoff;

  // nodes 0 and 1 are the dummies (see compute), then the local atoms, then the ghosts
  std::unordered_map<tagint, int> node_of_tag;
  node_of_tag.reserve(2 * static_cast<size_t>(nlocal));
  node_of_atom.assign(nall, -1);
  atom_of_node.assign(DUMMIES, -1);
  for (int i = 0; i < nlocal; i++) {
    node_of_atom[i] = static_cast<int>(atom_of_node.size());
    node_of_tag[tag[i]] = node_of_atom[i];
    atom_of_node.push_back(i);
  }

  edge_receiver.clear();
  edge_sender.clear();
  edge_atom_i.clear();
  edge_atom_j.clear();
  edge_vector.clear();
  for (int ii = 0; ii < list->inum; ii++) {
    const int i = list->ilist[ii];
    const int *neighbours = list->firstneigh[i];
    const int count = list->numneigh[i];
    for (int jj = 0; jj < count; jj++) {
      const int j = neighbours[jj] & NEIGHMASK;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      if (dx * dx + dy * dy + dz * dz >= cutoff_sq) continue;
      if (node_of_atom[j] < 0) {    // a ghost reached for the first time: a new node unless its atom is one
        auto found = node_of_tag.try_emplace(tag[j], static_cast<int>(atom_of_node.size()));
        node_of_atom[j] = found.first->second;
        if (found.second) atom_of_node.push_back(j);
      }
      edge_receiver.push_back(node_of_atom[i]);
      edge_sender.push_back(node_of_atom[j]);
      edge_atom_i.push_back(i);
      edge_atom_j.push_back(j);
      edge_vector.insert(edge_vector.end(), {dx, dy, dz});
    }
  }
}

/* The halo exchange (sinet_ase.ops.halo), called by the model while compute runs it.
   fill: the rows of the nodes computed here (dummies, then local atoms), followed by the
   ghost nodes' rows, which LAMMPS's forward communication brings from their owners. */
at::Tensor PairSINet::halo_fill(const at::Tensor &rows, int64_t num_nodes)
{
  const long computed = rows.size(0);
  auto sizes = rows.sizes().vec();
  sizes[0] = num_nodes;
  at::Tensor out = at::empty(sizes, rows.options());
  out.narrow(0, 0, computed).copy_(rows);
  if (comm->nprocs == 1) return out;    // one process: every node is computed here
  const int nlocal = atom->nlocal;
  halo_width = computed > 0 ? rows.numel() / computed : 0;
  if (halo_width > comm_forward)
    error->one(FLERR, "pair_style sinet: the model exchanges {} numbers per atom, the package says {}",
               halo_width, comm_forward);
  halo_buffer.resize(static_cast<size_t>(atom->nlocal + atom->nghost) * halo_width);
  at::Tensor local_rows = rows.narrow(0, DUMMIES, nlocal).to(at::kDouble).contiguous();
  std::memcpy(halo_buffer.data(), local_rows.data_ptr<double>(), sizeof(double) * nlocal * halo_width);
  comm->forward_comm(this, static_cast<int>(halo_width));
  const long ghosts = num_nodes - computed;
  if (ghosts > 0) {
    at::Tensor received = at::empty({ghosts, halo_width}, at::TensorOptions().dtype(at::kDouble));
    double *r = received.data_ptr<double>();
    for (long n = 0; n < ghosts; n++)
      std::memcpy(r + n * halo_width, &halo_buffer[static_cast<size_t>(atom_of_node[computed + n]) * halo_width],
                  sizeof(double) * halo_width);
    out.narrow(0, computed, ghosts).view({ghosts, halo_width}).copy_(received);
  }
  return out;
}

/* collect, fill's transpose: the gradient of the computed rows, plus what other processes
   hold for ghost copies of the local atoms (LAMMPS's reverse communication sums them). */
at::Tensor PairSINet::halo_collect(const at::Tensor &grad, int64_t num_rows)
{
  at::Tensor out = grad.narrow(0, 0, num_rows).clone(at::MemoryFormat::Contiguous);
  if (comm->nprocs == 1) return out;
  const int nlocal = atom->nlocal;
  const long num_nodes = grad.size(0), ghosts = num_nodes - num_rows;
  halo_width = num_nodes > 0 ? grad.numel() / num_nodes : 0;
  halo_buffer.assign(static_cast<size_t>(atom->nlocal + atom->nghost) * halo_width, 0.0);
  if (ghosts > 0) {
    at::Tensor sent = grad.narrow(0, num_rows, ghosts).to(at::kDouble).contiguous();
    const double *g = sent.data_ptr<double>();
    for (long n = 0; n < ghosts; n++)
      std::memcpy(&halo_buffer[static_cast<size_t>(atom_of_node[num_rows + n]) * halo_width], g + n * halo_width,
                  sizeof(double) * halo_width);
  }
  comm->reverse_comm(this, static_cast<int>(halo_width));
  at::Tensor received = at::from_blob(halo_buffer.data(), {nlocal, halo_width}, at::TensorOptions().dtype(at::kDouble));
  out.narrow(0, DUMMIES, nlocal).view({nlocal, halo_width}).add_(received.to(out.scalar_type()));
  return out;
}

int PairSINet::pack_forward_comm(int n, int *list, double *buf, int /*pbc_flag*/, int * /*pbc*/)
{
  for (int k = 0; k < n; k++)
    std::memcpy(buf + k * halo_width, &halo_buffer[static_cast<size_t>(list[k]) * halo_width],
                sizeof(double) * halo_width);
  return n * static_cast<int>(halo_width);
}

void PairSINet::unpack_forward_comm(int n, int first, double *buf)
{
  std::memcpy(&halo_buffer[static_cast<size_t>(first) * halo_width], buf, sizeof(double) * n * halo_width);
}

int PairSINet::pack_reverse_comm(int n, int first, double *buf)
{
  std::memcpy(buf, &halo_buffer[static_cast<size_t>(first) * halo_width], sizeof(double) * n * halo_width);
  return n * static_cast<int>(halo_width);
}

void PairSINet::unpack_reverse_comm(int n, int *list, double *buf)
{
  for (int k = 0; k < n; k++) {
    double *row = &halo_buffer[static_cast<size_t>(list[k]) * halo_width];
    for (long c = 0; c < halo_width; c++) row[c] += buf[k * halo_width + c];
  }
}

void PairSINet::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  for (int k = 0; k < nextra; k++) pvector[k] = 0.0;
  // a process without atoms runs the model too (on the two dummies): the halo exchanges
  // inside it are collective
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
  at::Tensor local = at::zeros({DUMMIES + nlocal}, double_options);    // the nodes computed here
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
  // every layer runs on the one edge list (the edges into local atoms); the counts are those
  // that compute pair sinet has always reported (nodes, embedding edges, layer edges, edges
  // into local atoms)
  pvector[0] = static_cast<double>(num_nodes - DUMMIES);
  pvector[1] = static_cast<double>(num_edges);
  pvector[2] = static_cast<double>(num_layers) * static_cast<double>(num_edges);
  pvector[3] = static_cast<double>(num_edges);
  std::vector<at::Tensor> inputs = {species, local, index, vectors};

  std::vector<at::Tensor> outputs;
  running = this;    // the halo operators the model calls act on this pair style
  try {
    outputs = model->run(inputs);
  } catch (const std::exception &err) {
    running = nullptr;
    error->one(FLERR, "pair_style sinet: the model failed on this step: {}", first_line(err.what()));
  }
  running = nullptr;

  // dE/dr of each edge (the two dummy edges come first)
  at::Tensor edge_grad = outputs[2].contiguous();
  const double *grad = edge_grad.data_ptr<double>() + 3 * 2;

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
