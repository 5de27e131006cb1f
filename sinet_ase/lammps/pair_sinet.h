/* pair_style sinet: a SINet model exported by sinet_ase.deploy.export_model (an
   AOTInductor package, .pt2) as a LAMMPS pair style, with MPI domain decomposition.

     pair_style sinet
     pair_coeff * * model.pt2 Cu O     # one element per LAMMPS atom type

   Each step every process builds the graph of the atoms it sees and runs the model on it:

   - nodes: its own atoms, plus ghost atoms owned by other processes within one cutoff of
     them (LAMMPS's usual ghost shell), one node per atom ID: the periodic images of an
     atom are one node, and edges to an image carry the image's edge vector (so one process
     on a periodic box evaluates exactly the graph of the ASE calculator, with no
     duplicated atoms); edges: those into its own atoms.
   - halo exchange: before each layer the ghosts' features must be those their owners
     computed. The model calls the operators sinet_halo::fill (and, in its backward pass,
     sinet_halo::collect), which this pair style defines with LAMMPS's forward and reverse
     communication of channels x (L + 1)^2 numbers per atom. So each process computes the
     features of its own atoms only, in every layer, and the ghost shell stays one cutoff
     deep whatever the number of layers.
   - only local atoms' energies count; forces go to every atom of the graph, ghosts
     included, and LAMMPS's reverse communication (newton pair on) adds them to the
     owners; the virial is W = -sum_edges r_ij (x) dE/dr_ij, summed over processes by
     LAMMPS, so NPT works. Per-atom energies and virials (compute pe/atom, stress/atom)
     are available too: each edge's virial is split half and half between its atoms.
   - `compute ID all pair sinet` gives the graph sizes, summed over processes: c_ID[1]
     nodes, [2] edges of the embedding, [3] edges of all layers together, [4] edges into
     local atoms (the work a single process on the whole box would do per layer).

   Units metal (eV, Angstrom), newton pair on, atom IDs. */

#ifndef LMP_PAIR_SINET_H
#define LMP_PAIR_SINET_H

#include "pair.h"

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

namespace torch {
namespace inductor {
class AOTIModelPackageLoader;
}
}    // namespace torch

namespace LAMMPS_NS {

class PairSINet : public Pair {
 public:
  PairSINet(class LAMMPS *);
  ~PairSINet() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

  // the halo exchange operators (sinet_ase.ops.halo) while compute runs the model
  at::Tensor halo_fill(const at::Tensor &rows, int64_t num_nodes);
  at::Tensor halo_collect(const at::Tensor &grad, int64_t num_rows);

 protected:
  void allocate();
  void load_model(const std::string &path);
  void build_graph();

  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> model;
  std::string model_path;
  std::vector<std::string> elements;    // the model's elements, in species order
  std::vector<int> species_of_type;     // LAMMPS type (1..ntypes) -> species index
  double cutoff = 0.0;
  int num_layers = 0;
  int compiled_threads = 0;    // threads per process the package's kernels were compiled for
  std::string model_dtype;     // "float64" or "float32", from the package metadata
  bool blas_warned = false;    // the slow-BLAS warning is given once per run

  // graph of the current step (see the header comment)
  std::vector<int> node_of_atom;       // LAMMPS atom index -> node (-1: not in the graph)
  std::vector<int> atom_of_node;       // node -> a LAMMPS atom index it stands for (-1: dummy)
  std::vector<long> edge_receiver, edge_sender;    // nodes
  std::vector<int> edge_atom_i, edge_atom_j;       // LAMMPS atoms (forces go there)
  std::vector<double> edge_vector;                 // 3 per edge, x_j - x_i

  // halo exchange: one row of halo_width numbers per LAMMPS atom (local and ghost)
  std::vector<double> halo_buffer;
  long halo_width = 0;
};

}    // namespace LAMMPS_NS

#endif
