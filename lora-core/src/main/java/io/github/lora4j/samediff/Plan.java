package io.github.lora4j.samediff;

import io.github.lora4j.InitialAdapter;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.TargetModules;
import io.github.lora4j.WeightLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.Predicate;
import java.util.regex.Pattern;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.VariableType;
import org.nd4j.autodiff.samediff.internal.Variable;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * What {@link LoraSameDiff#apply} will do to a graph, checked in full before anything changes: the targeted
 * weights, how each op uses them, the new variable names and the variables to freeze. {@link #execute()} then
 * makes the changes, which cannot fail on what was checked.
 */
final class Plan {

    /**
     * One targeted weight: everything {@link #execute()} needs, all checked; for DoRA also the initial magnitude and
     * {@code ‖W_j‖²} (null otherwise).
     */
    record Target(String weight, String module, WeightLayout layout, LoraConfig config, INDArray initialA, long out,
                  String a, String b, String scaling, List<GraphSurgery.Inserted> inserted,
                  List<GraphSurgery.DropoutPath> dropouts, INDArray initialMagnitude, double[] weightSquares) {
    }

    /** The suffix of an adapter's {@code A} variable: {@code <module>/lora_A}. */
    private static final String A_SUFFIX = "/lora_A";

    private final SameDiff sd;
    private final List<Target> targets;
    private final List<String> frozen;

    Plan(SameDiff sd, List<Target> targets, List<String> frozen) {
        this.sd = sd;
        this.targets = List.copyOf(targets);
        this.frozen = List.copyOf(frozen);
    }

    List<Target> targets() {
        return targets;
    }

    /** Trainable variables that {@link #execute()} turns into constants (targeted weights among them). */
    List<String> frozen() {
        return frozen;
    }

    /**
     * Refuses DoRA with dropout: PEFT then recomputes the base product on the dropped-out input, which the graph's
     * DoRA path ({@link DoraGraph}) does not build.
     */
    static void requireDoraWithoutDropout(LoraConfig config) {
        if (config.useDora() && config.dropout() != 0) {
            throw new IllegalArgumentException("DoRA with dropout is not supported in the SameDiff path (PEFT's DoRA "
                    + "recomputes the base product on the dropped-out input); expected dropout 0 with useDora, got "
                    + config.dropout() + "; the graph is unchanged");
        }
    }

    /** The module name of a weight variable: without a trailing {@code "/weight"} or {@code ".weight"}. */
    static String moduleOf(String weight) {
        for (String suffix : List.of("/weight", ".weight")) {
            if (weight.endsWith(suffix) && weight.length() > suffix.length()) {
                return weight.substring(0, weight.length() - suffix.length());
            }
        }
        return weight;
    }

    /**
     * PEFT's rule for a list of names ({@link TargetModules}), with SameDiff's {@code '/'} scopes beside PyTorch's dots,
     * on the weight's name and on its module name.
     */
    static boolean matchesName(String weight, List<String> names) {
        return TargetModules.anyNameMatches(weight, names, '.', '/')
                || TargetModules.anyNameMatches(moduleOf(weight), names, '.', '/');
    }

    /** New variable names for a module read by {@code uses} ops: A, B, s, then base, u, up, delta per op. */
    static List<String> namesFor(String module, int uses) {
        List<String> n = new ArrayList<>(List.of(module + "/lora_A", module + "/lora_B", module + "/lora_scaling"));
        for (int k = 0; k < uses; k++) {
            for (String part : List.of("/lora_base", "/lora_u", "/lora_up", "/lora_delta")) {
                n.add(module + part + suffix(k));
            }
        }
        return n;
    }

    /** The suffix of the names of a module's {@code k}-th adapted op: none, then {@code _1}, {@code _2}, ... */
    static String suffix(int k) {
        return k == 0 ? "" : "_" + k;
    }

    /** The names a module's LoRA dropout adds: each use's {@link GraphSurgery.DropoutPath}. */
    static List<GraphSurgery.DropoutPath> dropoutPaths(String module, int uses) {
        List<GraphSurgery.DropoutPath> paths = new ArrayList<>();
        for (int k = 0; k < uses; k++) {
            paths.add(GraphSurgery.DropoutPath.of(module, suffix(k)));
        }
        return paths;
    }

    /**
     * Checks that the names of a module's LoRA dropout are free in {@code sd} (and in {@code planned}, to which they are
     * added).
     *
     * @throws IllegalArgumentException naming the first name taken
     */
    static void requireDropoutNamesFree(SameDiff sd, String module, List<GraphSurgery.DropoutPath> paths,
            Set<String> planned) {
        List<String> names = new ArrayList<>();
        paths.forEach(d -> names.addAll(d.names()));
        for (String n : names) {
            if (sd.hasVariable(n) || sd.getOps().containsKey(n) || !planned.add(n)) {
                throw new IllegalArgumentException("variable '" + n + "' (for the LoRA dropout of '" + module
                        + "') already exists in this SameDiff graph, as a variable or an op name; the graph is unchanged");
            }
        }
    }

    /**
     * Checks the targets of {@link LoraSameDiff#apply} on {@code sd} without changing it.
     *
     * @throws IllegalArgumentException for anything {@link LoraSameDiff#apply} refuses
     */
    static Plan forTargets(SameDiff sd, LoraConfig config, List<String> names, Pattern regex, List<String> keep) {
        refuseExistingAdapters(sd);
        Predicate<String> matches;
        String what;
        if (regex != null) {
            matches = w -> TargetModules.regexMatches(w, regex) || TargetModules.regexMatches(moduleOf(w), regex);
            what = "target regex '" + regex.pattern() + "'";
        } else {
            if (names.isEmpty()) {
                throw new IllegalArgumentException("expected at least one target weight name, got none");
            }
            for (String n : names) {
                if (n == null || n.isBlank()) {
                    throw new IllegalArgumentException("target weight names must not be blank, got " + names);
                }
            }
            matches = w -> matchesName(w, names);
            what = "target names " + names;
        }
        List<String> matched = new ArrayList<>();
        for (Variable v : sd.getVariables().values()) {
            VariableType type = v.getVariable().getVariableType();
            if ((type == VariableType.VARIABLE || type == VariableType.CONSTANT) && matches.test(v.getName())) {
                matched.add(v.getName());
            }
        }
        if (matched.isEmpty()) {
            throw new IllegalArgumentException(what + " matched no weight; 2-D variables and constants of the graph: "
                    + weights(sd) + "; the graph is unchanged");
        }
        Set<String> planned = new HashSet<>();
        List<Target> targets = new ArrayList<>();
        Map<String, String> modules = new LinkedHashMap<>();
        for (String w : matched) {
            String other = modules.put(moduleOf(w), w);
            if (other != null) {
                throw new IllegalArgumentException("weights '" + other + "' and '" + w + "' have the same module name '"
                        + moduleOf(w) + "'; target one of them; the graph is unchanged");
            }
            targets.add(target(sd, w, config.forModule(moduleOf(w)), planned));
        }
        Set<String> keepSet = new HashSet<>();
        for (String k : keep) {
            Variable v = k == null ? null : sd.getVariables().get(k);
            if (v == null || v.getVariable().getVariableType() != VariableType.VARIABLE) {
                throw new IllegalArgumentException("keepTrainable: expected a trainable variable of the graph, got '" + k
                        + "' (" + (v == null ? "no such variable" : v.getVariable().getVariableType()) + ")");
            }
            if (matched.contains(k)) {
                throw new IllegalArgumentException("keepTrainable: '" + k + "' is a targeted weight, which stays frozen");
            }
            keepSet.add(k);
        }
        List<String> frozen = new ArrayList<>();
        for (Variable v : sd.getVariables().values()) {
            if (v.getVariable().getVariableType() == VariableType.VARIABLE && !keepSet.contains(v.getName())) {
                frozen.add(v.getName());
            }
        }
        return new Plan(sd, targets, frozen);
    }

    /**
     * Refuses a graph that already holds lora4j adapters (an earlier {@link LoraSameDiff#apply}, also one saved with
     * the graph, or {@link LoraSameDiff#linear}): a second apply would freeze their {@code A} and {@code B} (every
     * trainable variable it does not keep), could put LoRA on them, and would leave the first adapters' unload a
     * graph it does not know.
     *
     * @throws IllegalStateException naming the adapted modules; the graph is unchanged
     */
    static void refuseExistingAdapters(SameDiff sd) {
        TreeSet<String> modules = new TreeSet<>();
        for (String v : sd.getVariables().keySet()) {
            if (v.endsWith(A_SUFFIX)) {
                String m = v.substring(0, v.length() - A_SUFFIX.length());
                if (sd.hasVariable(m + "/lora_B") && sd.hasVariable(m + "/lora_scaling")) {
                    modules.add(m);
                }
            }
        }
        if (!modules.isEmpty()) {
            String first = modules.first();
            throw new IllegalStateException("the graph already has LoRA adapters on " + modules + " (variables "
                    + first + "/lora_A, " + first + "/lora_B, " + first + "/lora_scaling, ...: from an earlier "
                    + "LoraSameDiff.apply or LoraSameDiff.linear); a second apply would freeze their A and B, could "
                    + "adapt them, and would break the first adapters' unload. Expected a graph without adapters: "
                    + "apply every target in one call, or unload() / mergeAndUnload() the first adapters before; "
                    + "the graph is unchanged");
        }
    }

    /**
     * Checks one weight: 2-D, FLOAT or DOUBLE, finite, read only by matmul-type ops that agree on its layout and
     * whose other operand has its data type; and that the new names are free (in {@code sd} and in {@code planned},
     * to which they are added).
     */
    static Target target(SameDiff sd, String weight, LoraConfig config, Set<String> planned) {
        requireDoraWithoutDropout(config);
        Variable v = sd.getVariables().get(weight);
        SDVariable var = v.getVariable();
        INDArray w = var.getArr();
        if (w == null || w.rank() != 2) {
            throw new IllegalArgumentException("weight '" + weight + "': expected a 2-D matrix, got "
                    + (w == null ? "no array" : "shape " + Arrays.toString(w.shape())) + "; the graph is unchanged");
        }
        if (w.dataType() != DataType.FLOAT && w.dataType() != DataType.DOUBLE) {
            throw new IllegalArgumentException("weight '" + weight + "': expected FLOAT or DOUBLE, got " + w.dataType()
                    + "; the graph is unchanged");
        }
        List<String> readers = v.getInputsForOp() == null ? List.of() : new ArrayList<>(new LinkedHashSet<>(v.getInputsForOp()));
        if (readers.isEmpty()) {
            throw new IllegalArgumentException("weight '" + weight + "' is read by no op; the graph is unchanged");
        }
        List<GraphSurgery.Use> uses = new ArrayList<>();
        for (String op : readers) {
            GraphSurgery.Use use = GraphSurgery.use(sd, weight, op);
            SDVariable input = sd.getVariable(use.input());
            if (input.dataType() != w.dataType()) {
                throw new IllegalArgumentException("weight '" + weight + "' is " + w.dataType() + " but op '" + op
                        + "' multiplies it with '" + use.input() + "' of type " + input.dataType()
                        + "; expected the weight's type; the graph is unchanged");
            }
            if (!uses.isEmpty() && uses.get(0).layout() != use.layout()) {
                throw new IllegalArgumentException("weight '" + weight + "' is used as " + describe(uses.get(0).layout())
                        + " by op '" + uses.get(0).op() + "' but as " + describe(use.layout()) + " by op '" + op
                        + "'; one adapter cannot serve both; the graph is unchanged");
            }
            uses.add(use);
        }
        WeightLayout layout = uses.get(0).layout();
        InitialAdapter init;
        try {
            // LoraLinear.wrap's own checks (finite W, rank >= 1) and the adapter it would start with; W is only read.
            init = InitialAdapter.of(w, null, layout, config);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("weight '" + weight + "': " + e.getMessage() + "; the graph is unchanged", e);
        }
        String module = moduleOf(weight);
        List<String> names = namesFor(module, uses.size());
        List<String> all = new ArrayList<>(names);
        if (config.useDora()) {
            all.addAll(DoraGraph.namesFor(module, uses.size()));
        }
        for (String n : all) {
            if (sd.hasVariable(n) || sd.getOps().containsKey(n) || !planned.add(n)) {
                throw new IllegalArgumentException("variable '" + n + "' (for the adapter of '" + weight
                        + "') already exists in this SameDiff graph, as a variable or an op name; the graph is unchanged");
            }
        }
        List<GraphSurgery.DropoutPath> dropouts = config.dropout() > 0 ? dropoutPaths(module, uses.size()) : List.of();
        if (!dropouts.isEmpty()) {
            requireDropoutNamesFree(sd, module, dropouts, planned);
        }
        for (GraphSurgery.Use use : uses) {
            if (use.op().equals(use.output()) && GraphSurgery.hasControlDependencies(sd, use.op())) {
                throw new IllegalArgumentException("op '" + use.op() + "' that reads weight '" + weight
                        + "' has control dependencies, which lora4j does not rewire; the graph is unchanged");
            }
        }
        List<GraphSurgery.Inserted> inserted = new ArrayList<>();
        for (int k = 0; k < uses.size(); k++) {
            int i = 3 + 4 * k;
            inserted.add(new GraphSurgery.Inserted(uses.get(k), names.get(i), names.get(i + 1), names.get(i + 2),
                    names.get(i + 3)));
        }
        INDArray m0 = init.magnitude();
        double[] squares = config.useDora() ? rowSquares(w, layout) : null;
        long out = layout == WeightLayout.OUT_IN ? w.rows() : w.columns();
        return new Target(weight, module, layout, config, init.a(), out,
                names.get(0), names.get(1), names.get(2), inserted, dropouts, m0, squares);
    }

    /** {@code ‖W_j‖²} per output feature, in double (a row of {@code [out, in]}, a column of {@code [in, out]}). */
    private static double[] rowSquares(INDArray w, WeightLayout layout) {
        INDArray d = w.castTo(DataType.DOUBLE);
        INDArray sq = d.mul(d).sum(layout == WeightLayout.OUT_IN ? 1 : 0);
        return sq.toDoubleVector();
    }

    private static String describe(WeightLayout layout) {
        return layout == WeightLayout.OUT_IN ? "[out, in]" : "[in, out]";
    }

    private static TreeSet<String> weights(SameDiff sd) {
        TreeSet<String> out = new TreeSet<>();
        for (Variable v : sd.getVariables().values()) {
            VariableType type = v.getVariable().getVariableType();
            INDArray arr = type == VariableType.VARIABLE || type == VariableType.CONSTANT ? v.getVariable().getArr() : null;
            if (arr != null && arr.rank() == 2) {
                out.add(v.getName());
            }
        }
        return out;
    }

    /** Makes the planned changes: A, B and s per weight, the LoRA path after each op, then the freezing. */
    void execute() {
        List<SDVariable> adapters = new ArrayList<>();
        for (Target t : targets) {
            DataType type = t.initialA().dataType();
            SDVariable a = sd.constant(t.a(), t.initialA().dup('c'));
            SDVariable b = sd.constant(t.b(), Nd4j.zeros(type, t.out(), t.config().rank()));
            SDVariable s = sd.constant(t.scaling(), Nd4j.scalar(type, t.config().scaling()));
            for (GraphSurgery.Inserted ins : t.inserted()) {
                GraphSurgery.insert(sd, ins, a, b, s);
            }
            for (int k = 0; k < t.dropouts().size(); k++) {
                GraphSurgery.insertDropout(sd, t.inserted().get(k), t.dropouts().get(k));
            }
            adapters.add(a);
            adapters.add(b);
            if (t.config().useDora()) {
                adapters.add(DoraGraph.insert(sd, t, a, b, s, t.initialMagnitude(), t.weightSquares()));
            }
        }
        List<SDVariable> toFreeze = new ArrayList<>();
        for (String f : frozen) {
            toFreeze.add(sd.getVariable(f));
        }
        sd.convertToConstants(toFreeze);        // also drops their optimizer state
        sd.convertToVariables(adapters);        // creates optimizer state if the graph was trained before
    }
}
