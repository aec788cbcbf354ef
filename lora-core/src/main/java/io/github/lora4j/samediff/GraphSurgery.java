package io.github.lora4j.samediff;

import io.github.lora4j.WeightLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.nd4j.autodiff.functions.DifferentialFunction;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.internal.SameDiffOp;
import org.nd4j.autodiff.samediff.internal.Variable;
import org.nd4j.linalg.api.ops.DynamicCustomOp;
import org.nd4j.linalg.api.ops.impl.reduce.Mmul;
import org.nd4j.linalg.api.ops.impl.transforms.custom.XwPlusB;

/**
 * The graph edits behind {@link LoraSameDiff#apply}: reading how a matmul-type op uses a weight, inserting the LoRA
 * path after it, and taking that path out again. SameDiff 1.0.0-M2.1 has no public "remove op" call, so removal
 * edits its op and variable maps directly ({@link SameDiff#getOps()}, {@link SameDiff#getVariables()} are the live
 * maps); everything else goes through its public methods.
 *
 * <p>Every op this class inserts is named like its output variable, and an adapted op whose name was its output's
 * follows that output to its new name: {@code fromFlatBuffers} pairs an op with the variable of the op's own name
 * before it reads the stored output names, so an op {@code matmul} beside a variable {@code matmul} that it no longer
 * produces would be loaded wrongly.
 */
final class GraphSurgery {

    private GraphSurgery() {
    }

    /**
     * How one op uses the weight: {@code output = op(input)·op(W)} (weight second) or {@code op(W)·op(input)}
     * (weight first), with mmul's transpose flags; {@code layout} is how {@code W} is stored relative to
     * {@code [out, in]}.
     */
    record Use(String op, String opType, boolean weightFirst, String input, boolean transposeInput,
               boolean transposeResult, WeightLayout layout, String output) {
    }

    /** The variables inserted after one use, by name. */
    record Inserted(Use use, String base, String u, String up, String delta) {
    }

    /**
     * The variables of one use's LoRA dropout, by name: {@code mask = onesLike(x)}, whose values {@link DropoutMasks}
     * replaces in training, and {@code dropped = x ⊙ mask}, the LoRA path's input.
     */
    record DropoutPath(String mask, String dropped) {
        /** The names for the use with suffix {@code sfx} of {@code module}. */
        static DropoutPath of(String module, String sfx) {
            return new DropoutPath(module + "/lora_drop_mask" + sfx, module + "/lora_dropped" + sfx);
        }

        /** Every name, in computation order. */
        List<String> names() {
            return List.of(mask, dropped);
        }
    }

    /**
     * How op {@code opName} uses weight {@code weight}.
     *
     * @throws IllegalArgumentException if the op is not mmul / matmul or linear (xw_plus_b), uses the weight in a
     *                                  role other than a matmul operand, or uses it twice
     */
    static Use use(SameDiff sd, String weight, String opName) {
        SameDiffOp op = sd.getOps().get(opName);
        DifferentialFunction f = op.getOp();
        List<String> in = op.getInputsToOp();
        int idx = in.indexOf(weight);
        String type = f.opName();
        if (idx != in.lastIndexOf(weight)) {
            throw refuse(weight, opName, type, "it is used twice by that op");
        }
        if (op.getOutputsOfOp() == null || op.getOutputsOfOp().size() != 1) {
            throw refuse(weight, opName, type, "the op has not exactly one output");
        }
        String output = op.getOutputsOfOp().get(0);
        if (f instanceof Mmul mmul) {
            if (in.size() != 2) {
                throw refuse(weight, opName, type, "expected 2 inputs, got " + in.size());
            }
            for (int i = 0; i < mmul.numTArguments(); i++) {
                double t = mmul.getTArgument(i);
                if (t != (i == 0 ? 1.0 : 0.0)) {
                    throw refuse(weight, opName, type, "it scales its product (alpha/beta arguments "
                            + Arrays.toString(mmul.tArgs()) + ")");
                }
            }
            boolean tA = flag(mmul, 0);
            boolean tB = flag(mmul, 1);
            boolean tR = flag(mmul, 2);
            if (idx == 1) {         // y = op(x)·op(W): op(W) is [in, out]
                return new Use(opName, type, false, in.get(0), tA, tR, tB ? WeightLayout.OUT_IN : WeightLayout.IN_OUT,
                        output);
            }
            // y = op(W)·op(x): op(W) is [out, in]
            return new Use(opName, type, true, in.get(1), tB, tR, tA ? WeightLayout.IN_OUT : WeightLayout.OUT_IN, output);
        }
        if (f instanceof XwPlusB xw) {
            if (idx != 1) {
                throw refuse(weight, opName, type, "it is its " + (idx == 0 ? "input" : "bias") + ", not its weight");
            }
            if (xw.numIArguments() > 0 && xw.getIArgument(0) != 0) {
                throw refuse(weight, opName, type, "its weight is transposed (integer argument " + xw.getIArgument(0)
                        + "), which lora4j does not read");
            }
            return new Use(opName, type, false, in.get(0), false, false, WeightLayout.IN_OUT, output);
        }
        throw refuse(weight, opName, type, "LoRA adapts weights used by mmul / matmul and linear (xw_plus_b) only");
    }

    private static boolean flag(DynamicCustomOp op, int i) {
        return op.numIArguments() > i && op.getIArgument(i) != 0;
    }

    private static IllegalArgumentException refuse(String weight, String opName, String type, String why) {
        return new IllegalArgumentException("weight '" + weight + "' is used by op '" + opName + "' (" + type
                + "), which lora4j cannot adapt: " + why + "; the graph is unchanged");
    }

    /**
     * Inserts {@code s·(x·Aᵀ)·Bᵀ} (or {@code s·B·(A·x)} for a weight-first product) after {@code use}: the op's
     * output is renamed to {@code names.base()}, and a new variable under the old output name computes
     * {@code base + delta}; every op that read the old output reads the new one.
     */
    static void insert(SameDiff sd, Inserted names, SDVariable a, SDVariable b, SDVariable scaling) {
        Use use = names.use();
        List<String> loss = new ArrayList<>(sd.getLossVariables());
        sd.renameVariable(use.output(), names.base());
        List<String> readers = new ArrayList<>(inputsFor(sd, names.base()));
        SDVariable x = sd.getVariable(use.input());
        SDVariable up;
        if (!use.weightFirst()) {
            SDVariable u = sd.mmul(names.u(), x, a, use.transposeInput(), true, false);       // op(x) A^T  [n, r]
            up = sd.mmul(names.up(), u, b, false, true, use.transposeResult());               // u B^T      [n, out]
        } else {
            SDVariable u = sd.mmul(names.u(), a, x, false, use.transposeInput(), false);      // A op(x)    [r, n]
            up = sd.mmul(names.up(), b, u, false, false, use.transposeResult());              // B u        [out, n]
        }
        SDVariable delta = up.mul(names.delta(), scaling);
        if (use.op().equals(use.output())) {
            renameOp(sd, use.op(), names.base());
        }
        SDVariable y = sd.getVariable(names.base()).add(use.output(), delta);
        for (String v : List.of(names.u(), names.up(), names.delta(), use.output())) {
            renameOp(sd, sd.getVariables().get(v).getOutputOfOp(), v);
        }
        for (String reader : readers) {
            replaceInput(sd, reader, names.base(), y);
        }
        if (!loss.equals(sd.getLossVariables())) {
            sd.setLossVariables(loss.toArray(new String[0]));     // renameVariable renamed a loss variable too
        }
    }

    /**
     * Puts inverted dropout on the input of the LoRA path of one use ({@link #insert} done before): the op computing
     * {@code u} reads {@code dropped = x ⊙ mask} instead of {@code x}, with {@code mask = onesLike(x)}; the base op
     * still reads {@code x}. Outside training the mask is all ones, so {@code dropped = x} bit for bit; in training
     * {@link DropoutMasks} overwrites the mask op's output, right after it ran, with {@code m/(1 − p)}: the forward and
     * the backward of that step read the same array.
     */
    static void insertDropout(SameDiff sd, Inserted names, DropoutPath d) {
        SDVariable x = sd.getVariable(names.use().input());
        SDVariable mask = sd.onesLike(d.mask(), x);                                         // 1, or m/(1-p) in training
        SDVariable dropped = x.mul(d.dropped(), mask);                                       // x ⊙ mask
        for (String v : d.names()) {
            renameOp(sd, sd.getVariables().get(v).getOutputOfOp(), v);
        }
        replaceInput(sd, sd.getVariables().get(names.u()).getOutputOfOp(), x.name(), dropped);
    }

    /** Undoes {@link #insertDropout}: the op computing {@code u} reads {@code x} again; the dropout ops go. */
    static void removeDropout(SameDiff sd, Inserted names, DropoutPath d) {
        replaceInput(sd, sd.getVariables().get(names.u()).getOutputOfOp(), d.dropped(),
                sd.getVariable(names.use().input()));
        List<String> reversed = new ArrayList<>(d.names());
        java.util.Collections.reverse(reversed);
        for (String v : reversed) {
            removeOp(sd, sd.getVariables().get(v).getOutputOfOp());
        }
        for (String v : reversed) {
            removeVariable(sd, v);
        }
    }

    /** Undoes {@link #insert}: readers go back to the op's own output, which gets its old name back. */
    static void remove(SameDiff sd, Inserted names) {
        Use use = names.use();
        SDVariable base = sd.getVariable(names.base());
        for (String reader : new ArrayList<>(inputsFor(sd, use.output()))) {
            replaceInput(sd, reader, use.output(), base);
        }
        for (String v : List.of(use.output(), names.delta(), names.up(), names.u())) {
            removeOp(sd, sd.getVariables().get(v).getOutputOfOp());
        }
        for (String v : List.of(use.output(), names.delta(), names.up(), names.u())) {
            removeVariable(sd, v);
        }
        List<String> loss = new ArrayList<>(sd.getLossVariables());
        sd.renameVariable(names.base(), use.output());
        if (use.op().equals(use.output())) {
            renameOp(sd, names.base(), use.op());
        }
        if (!loss.equals(sd.getLossVariables())) {
            sd.setLossVariables(loss.toArray(new String[0]));
        }
    }

    /**
     * Checks, without changing anything, that {@link #remove} of every {@code inserted} and {@link #removeVariable}
     * of every name in {@code variables} would go through: each inserted variable still exists with the op that
     * produces it, and nothing but those LoRA ops reads a variable that is about to go, nor is one a loss variable.
     * (The readers of a use's output are redirected to the op's own output, so anything may read those.)
     *
     * @throws IllegalStateException naming the variable and its foreign reader; the graph is unchanged then
     */
    static void checkRemovable(SameDiff sd, String weight, List<Inserted> inserted, List<DropoutPath> dropouts,
            List<String> variables) {
        checkRemovable(sd, weight, inserted, dropouts, variables, Set.of());
    }

    /**
     * {@link #checkRemovable(SameDiff, String, List, List, List)}, with {@code alsoOurs} ops (DoRA's) allowed to read
     * too.
     */
    static void checkRemovable(SameDiff sd, String weight, List<Inserted> inserted, List<DropoutPath> dropouts,
            List<String> variables, Set<String> alsoOurs) {
        Set<String> loraOps = new HashSet<>(alsoOurs);
        List<String> going = new ArrayList<>();
        for (DropoutPath d : dropouts) {
            for (String v : d.names()) {
                Variable var = sd.getVariables().get(v);
                if (var == null || var.getOutputOfOp() == null || !sd.getOps().containsKey(var.getOutputOfOp())) {
                    throw new IllegalStateException("cannot take the adapter of '" + weight + "' out of the graph:"
                            + " its variable '" + v + "' or the op producing it is gone; nothing was changed");
                }
                loraOps.add(var.getOutputOfOp());
                going.add(v);
            }
        }
        for (Inserted names : inserted) {
            for (String v : List.of(names.base(), names.use().output(), names.delta(), names.up(), names.u())) {
                Variable var = sd.getVariables().get(v);
                if (var == null || var.getOutputOfOp() == null || !sd.getOps().containsKey(var.getOutputOfOp())) {
                    throw new IllegalStateException("cannot take the adapter of '" + weight + "' out of the graph:"
                            + " its variable '" + v + "' or the op producing it is gone; nothing was changed");
                }
                if (!v.equals(names.base())) {
                    loraOps.add(var.getOutputOfOp());
                }
            }
            going.addAll(List.of(names.delta(), names.up(), names.u()));
        }
        going.addAll(variables);
        List<String> loss = sd.getLossVariables();
        for (String v : going) {
            Variable var = sd.getVariables().get(v);
            if (var == null) {
                throw new IllegalStateException("cannot take the adapter of '" + weight + "' out of the graph: its"
                        + " variable '" + v + "' is gone; nothing was changed");
            }
            for (String reader : var.getInputsForOp() == null ? List.<String>of() : var.getInputsForOp()) {
                if (!loraOps.contains(reader)) {
                    throw new IllegalStateException("cannot take the adapter of '" + weight + "' out of the graph:"
                            + " op '" + reader + "' reads its variable '" + v + "', which would be removed (remove"
                            + " that op first); nothing was changed");
                }
            }
            if (loss != null && loss.contains(v)) {
                throw new IllegalStateException("cannot take the adapter of '" + weight + "' out of the graph: its"
                        + " variable '" + v + "' is a loss variable; nothing was changed");
            }
        }
    }

    /**
     * Renames op {@code from} to {@code to} in the op map, the op itself and the variables that name it. Only for
     * ops without control dependencies ({@link Plan} refuses the others).
     */
    static void renameOp(SameDiff sd, String from, String to) {
        if (from.equals(to)) {
            return;
        }
        SameDiffOp op = sd.getOps().remove(from);
        op.setName(to);
        op.getOp().setOwnName(to);
        sd.getOps().put(to, op);
        for (String in : op.getInputsToOp()) {
            List<String> readers = sd.getVariables().get(in).getInputsForOp();
            readers.replaceAll(r -> r.equals(from) ? to : r);
        }
        for (String out : op.getOutputsOfOp()) {
            sd.getVariables().get(out).setOutputOfOp(to);
        }
    }

    /** Whether op {@code opName} takes part in control dependencies, which {@link #renameOp} does not carry over. */
    static boolean hasControlDependencies(SameDiff sd, String opName) {
        SameDiffOp op = sd.getOps().get(opName);
        return notEmpty(op.getControlDeps()) || notEmpty(op.getVarControlDeps()) || notEmpty(op.getControlDepFor());
    }

    private static boolean notEmpty(List<String> l) {
        return l != null && !l.isEmpty();
    }

    /** Removes a variable that no op reads or produces any more, with its array. */
    static void removeVariable(SameDiff sd, String name) {
        Variable v = sd.getVariables().remove(name);
        if (v != null && v.getInputsForOp() != null && !v.getInputsForOp().isEmpty()) {
            throw new IllegalStateException("internal: variable '" + name + "' is still read by " + v.getInputsForOp());
        }
        if (sd.getVariablesArrays().hasArray(name)) {
            sd.getVariablesArrays().removeArray(name);
        }
        if (sd.getConstantArrays().hasArray(name)) {
            sd.getConstantArrays().removeArray(name);
        }
    }

    static void removeOp(SameDiff sd, String opName) {
        SameDiffOp op = sd.getOps().remove(opName);
        for (String in : op.getInputsToOp()) {
            Variable v = sd.getVariables().get(in);
            if (v != null && v.getInputsForOp() != null) {
                v.getInputsForOp().removeIf(opName::equals);
            }
        }
    }

    static List<String> inputsFor(SameDiff sd, String variable) {
        List<String> l = sd.getVariables().get(variable).getInputsForOp();
        return l == null ? List.of() : l;
    }

    /** Makes op {@code opName} read {@code to} wherever it read {@code from}. */
    static void replaceInput(SameDiff sd, String opName, String from, SDVariable to) {
        SameDiffOp op = sd.getOps().get(opName);
        List<String> in = op.getInputsToOp();
        for (int i = 0; i < in.size(); i++) {
            if (op.getInputsToOp().get(i).equals(from)) {
                sd.replaceArgFor(i, to, op.getOp());
            }
        }
    }
}
