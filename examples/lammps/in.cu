# Bulk fcc copper with pair_style sinet: NVT, then NPT (which reads the model's virial).
#
#   sinet-lammps-build                        # once: builds sinetplugin.so and prints the paths below
#   sinet-lammps-export cu.pt cu.pt2          # once per model: a model file -> a compiled package
#   export LD_LIBRARY_PATH=<venv>/lib LAMMPS_PLUGIN_PATH=~/.cache/sinet-ase/lammps-plugin
#   mpirun -np 2 lmp -in in.cu -var model cu.pt2
#
# Variables (-var NAME VALUE): model (the .pt2 package), n (n x n x n conventional cells),
# steps (per stage), temp (K).

variable        model index cu.pt2
variable        n     index 4
variable        steps index 1000
variable        temp  index 300

units           metal                      # eV, Angstrom, ps: the model's units
atom_style      atomic
boundary        p p p
lattice         fcc 3.61
region          box block 0 ${n} 0 ${n} 0 ${n}
create_box      1 box
create_atoms    1 box
mass            1 63.546

pair_style      sinet                       # needs newton on (the default)
pair_coeff      * * ${model} Cu             # one element per atom type

velocity        all create ${temp} 4928459 dist gaussian
timestep        0.001                       # 1 fs
thermo          100
thermo_style    custom step temp pe etotal press vol

fix             md all nvt temp ${temp} ${temp} 0.1
run             ${steps}
unfix           md

fix             md all npt temp ${temp} ${temp} 0.1 iso 0.0 0.0 1.0
run             ${steps}
