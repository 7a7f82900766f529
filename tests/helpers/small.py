"""Settings that make every stage of the stage table quick on the planted control (3 layers): the
stages whose defaults take minutes on CPU, made small. Enough to write every table and summary record."""

SMALL_SETTINGS = {
    "trace.window": 2,
    "knockout.window": 2,
    "trace.n_samples": 2,
    "decompose.solver": "sgd",
    "decompose.sgd_steps": 20,
    "decompose.sgd_log_every": 5,
    "surgery.n_null": 5,
}
