package io.github.lora4j.samediff;

import io.github.lora4j.WeightLayout;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.internal.Variable;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.ops.impl.controlflow.compat.StopGradient;
import org.nd4j.linalg.api.ops.impl.transforms.custom.XwPlusB;
import org.nd4j.linalg.factory.Nd4j;

/**
 * DoRA on the SameDiff path: after {@link GraphSurgery#insert} made each adapted op's output {@code base + delta},
 * this multiplies it by DoRA's factor, as PEFT computes it (dropout 0): with {@code c = m / ‖W + s·B·A‖_row}
 * ({@code m} the trainable {@code <module>/lora_magnitude_vector}, the norm through a {@code stop_gradient}, PEFT's
 * detach),
 * <pre>
 *   matmul / mmul:      y = cg ⊙ (base + delta)
 *   linear (xw_plus_b): y = cg ⊙ (base + delta − b) + b       (the op adds the bias inside)
 *   cg = 1 + gate·(c − 1)                                      (gate 0 while merged: W then holds c ⊙ (W + s·B·A))
 * </pre>
 * The norm is built without an {@code [out, in]} temporary, as {@code LoraLinear} computes it:
 * {@code ‖W_j‖² + 2s·Σ_k B_jk·(W Aᵀ)_jk + s²·B_j (A Aᵀ) B_jᵀ}, {@code ‖W_j‖²} a constant of the graph (W is frozen;
 * a merge restores it bit for bit on unmerge). Unlike {@code LoraLinear}, the graph has no fallback for rows where
 * those terms cancel (an update removing most of a row's norm): there the graph's norm keeps fewer digits.
 *
 * <p>Every variable and op it adds is named {@code <module>/dora_...} (per-use ones with the use's suffix), and
 * {@link #remove} takes them all out again, leaving what {@link GraphSurgery#insert} made.
 */
final class DoraGraph {

    /** The module-wide chain, in creation order; each name is also its op's name. */
    private static final List<String> CHAIN = List.of("dora_p", "dora_bp", "dora_dot", "dora_g", "dora_bg", "dora_bgb",
            "dora_quad", "dora_sdot", "dora_2sdot", "dora_squad", "dora_ssquad", "dora_n2a", "dora_n2", "dora_norm",
            "dora_norm_stop", "dora_c", "dora_cm1", "dora_gcm1", "dora_cg", "dora_cg_col");

    private DoraGraph() {
    }

    /** The magnitude variable of {@code module}. */
    static String magnitude(String module) {
        return module + "/lora_magnitude_vector";
    }

    /** The gate constant of {@code module}: 1 while DoRA applies, 0 while merged. */
    static String gate(String module) {
        return module + "/dora_gate";
    }

    /** Every name DoRA adds for {@code module} read by {@code uses} ops: variables and constants, chain, per use. */
    static List<String> namesFor(String module, int uses) {
        List<String> n = new ArrayList<>(List.of(magnitude(module), module + "/dora_weight_sq", gate(module)));
        for (String c : CHAIN) {
            n.add(module + "/" + c);
        }
        for (int k = 0; k < uses; k++) {
            n.addAll(perUse(module, k));
        }
        return n;
    }

    private static List<String> perUse(String module, int k) {
        String sfx = k == 0 ? "" : "_" + k;
        return List.of(module + "/lora_sum" + sfx, module + "/dora_nob" + sfx, module + "/dora_scaled" + sfx);
    }

    /**
     * Adds DoRA to {@code target}, whose LoRA path {@link GraphSurgery#insert} made: the magnitude (a constant for now;
     * the caller turns it into a variable with A and B), the chain and, per use, the factor on its output.
     */
    static SDVariable insert(SameDiff sd, Plan.Target t, SDVariable a, SDVariable b, SDVariable s, INDArray m0,
                             double[] weightSquares) {
        String mod = t.module();
        SDVariable w = sd.getVariable(t.weight());
        SDVariable m = sd.constant(magnitude(mod), m0);
        SDVariable wsq = sd.constant(mod + "/dora_weight_sq", Nd4j.createFromArray(weightSquares)
                .castTo(m0.dataType()));
        SDVariable gate = sd.constant(gate(mod), Nd4j.scalar(m0.dataType(), 1.0));
        boolean inOut = t.layout() == WeightLayout.IN_OUT;
        SDVariable p = sd.mmul(name(mod, "dora_p"), w, a, inOut, true, false);               // P = W A^T  [out, r]
        SDVariable dot = p.mul(name(mod, "dora_bp"), b).sum(name(mod, "dora_dot"), 1);       // Σ_k B⊙P    [out]
        SDVariable g = sd.mmul(name(mod, "dora_g"), a, a, false, true, false);               // G = A A^T  [r, r]
        SDVariable quad = sd.mmul(name(mod, "dora_bg"), b, g, false, false, false)
                .mul(name(mod, "dora_bgb"), b).sum(name(mod, "dora_quad"), 1);              // B G B^T    [out]
        SDVariable twoSDot = dot.mul(name(mod, "dora_sdot"), s).mul(name(mod, "dora_2sdot"), 2.0);
        SDVariable ssQuad = quad.mul(name(mod, "dora_squad"), s).mul(name(mod, "dora_ssquad"), s);
        SDVariable n2 = wsq.add(name(mod, "dora_n2a"), twoSDot).add(name(mod, "dora_n2"), ssQuad);
        SDVariable norm = sd.math().sqrt(name(mod, "dora_norm"), n2);                        // ‖W + sBA‖  [out]
        SDVariable stop = new StopGradient(sd, norm).outputVariable();
        sd.renameVariable(stop.name(), name(mod, "dora_norm_stop"));
        stop = sd.getVariable(name(mod, "dora_norm_stop"));
        SDVariable c = m.div(name(mod, "dora_c"), stop);                                     // m / ‖·‖    [out]
        SDVariable cg = c.sub(name(mod, "dora_cm1"), 1.0).mul(name(mod, "dora_gcm1"), gate)
                .add(name(mod, "dora_cg"), 1.0);                                             // 1 + gate·(c − 1)
        SDVariable cgCol = cg.reshape(t.out(), 1);                                           //            [out, 1]
        sd.renameVariable(cgCol.name(), name(mod, "dora_cg_col"));
        cgCol = sd.getVariable(name(mod, "dora_cg_col"));
        for (String v : CHAIN) {
            String n = name(mod, v);
            GraphSurgery.renameOp(sd, sd.getVariables().get(n).getOutputOfOp(), n);
        }
        for (int k = 0; k < t.inserted().size(); k++) {
            scaleOutput(sd, t.inserted().get(k), perUse(mod, k), cg, cgCol);
        }
        return m;
    }

    private static String name(String module, String part) {
        return module + "/" + part;
    }

    /**
     * The use's output {@code base + delta} becomes {@code names[0]} ({@code lora_sum}); a new variable under the
     * output's name computes DoRA's output from it, and every reader of the old output reads the new one.
     */
    private static void scaleOutput(SameDiff sd, GraphSurgery.Inserted ins, List<String> names, SDVariable cg,
                                    SDVariable cgCol) {
        GraphSurgery.Use use = ins.use();
        String output = use.output();
        List<String> loss = new ArrayList<>(sd.getLossVariables());
        String sumOp = sd.getVariables().get(output).getOutputOfOp();
        sd.renameVariable(output, names.get(0));
        GraphSurgery.renameOp(sd, sumOp, names.get(0));
        SDVariable sum = sd.getVariable(names.get(0));
        List<String> readers = new ArrayList<>(GraphSurgery.inputsFor(sd, names.get(0)));
        boolean outLast = use.weightFirst() == use.transposeResult();                  // [n, out] (else [out, n])
        SDVariable factor = outLast ? cg : cgCol;
        SDVariable y;
        if (sd.getOps().get(sd.getVariables().get(ins.base()).getOutputOfOp()).getOp() instanceof XwPlusB) {
            SDVariable bias = sd.getVariable(sd.getOps().get(sd.getVariables().get(ins.base()).getOutputOfOp())
                    .getInputsToOp().get(2));
            SDVariable nob = sum.sub(names.get(1), bias);                              // base + delta − b
            y = nob.mul(names.get(2), factor).add(output, bias);                       // cg ⊙ (…) + b
            GraphSurgery.renameOp(sd, nob.getCreator().getOwnName(), names.get(1));
            GraphSurgery.renameOp(sd, sd.getVariable(names.get(2)).getCreator().getOwnName(), names.get(2));
        } else {
            y = sum.mul(output, factor);                                               // cg ⊙ (base + delta)
        }
        GraphSurgery.renameOp(sd, y.getCreator().getOwnName(), output);
        for (String reader : readers) {
            GraphSurgery.replaceInput(sd, reader, names.get(0), y);
        }
        if (!loss.equals(sd.getLossVariables())) {
            sd.setLossVariables(loss.toArray(new String[0]));
        }
    }

    /** Undoes {@link #insert}: outputs are {@code base + delta} again; the chain and the magnitude are gone. */
    static void remove(SameDiff sd, String mod, List<GraphSurgery.Inserted> inserted) {
        for (int k = inserted.size() - 1; k >= 0; k--) {
            List<String> names = perUse(mod, k);
            String output = inserted.get(k).use().output();
            SDVariable sum = sd.getVariable(names.get(0));
            for (String reader : new ArrayList<>(GraphSurgery.inputsFor(sd, output))) {
                GraphSurgery.replaceInput(sd, reader, output, sum);
            }
            List<String> going = new ArrayList<>(List.of(output));
            if (sd.hasVariable(names.get(2))) {
                going.add(names.get(2));
                going.add(names.get(1));
            }
            for (String v : going) {
                GraphSurgery.removeOp(sd, sd.getVariables().get(v).getOutputOfOp());
            }
            for (String v : going) {
                GraphSurgery.removeVariable(sd, v);
            }
            List<String> loss = new ArrayList<>(sd.getLossVariables());
            String sumOp = sd.getVariables().get(names.get(0)).getOutputOfOp();
            sd.renameVariable(names.get(0), output);
            GraphSurgery.renameOp(sd, sumOp, output);
            if (!loss.equals(sd.getLossVariables())) {
                sd.setLossVariables(loss.toArray(new String[0]));
            }
        }
        List<String> chain = new ArrayList<>(CHAIN);
        java.util.Collections.reverse(chain);
        for (String v : chain) {
            GraphSurgery.removeOp(sd, sd.getVariables().get(name(mod, v)).getOutputOfOp());
        }
        for (String v : chain) {
            GraphSurgery.removeVariable(sd, name(mod, v));
        }
        for (String v : List.of(magnitude(mod), mod + "/dora_weight_sq", gate(mod))) {
            GraphSurgery.removeVariable(sd, v);
        }
    }

    /**
     * Checks, changing nothing, that {@link #remove} would go through: every DoRA variable still there with its op,
     * and none read by an op outside DoRA's and LoRA's own (the outputs excepted: their readers are redirected).
     *
     * @throws IllegalStateException naming the variable and its foreign reader
     */
    static void checkRemovable(SameDiff sd, String mod, List<GraphSurgery.Inserted> inserted, String weight) {
        Set<String> own = new HashSet<>();
        List<String> vars = namesFor(mod, inserted.size());
        for (String v : vars) {
            Variable var = sd.getVariables().get(v);
            if (var == null && !v.contains("/dora_nob") && !v.contains("/dora_scaled")) {
                throw new IllegalStateException("cannot take the DoRA adapter of '" + weight + "' out of the graph: "
                        + "its variable '" + v + "' is gone; nothing was changed");
            }
            if (var != null && var.getOutputOfOp() != null) {
                own.add(var.getOutputOfOp());
            }
        }
        for (GraphSurgery.Inserted ins : inserted) {
            own.add(sd.getVariables().get(ins.use().output()).getOutputOfOp());
        }
        for (String v : vars) {
            Variable var = sd.getVariables().get(v);
            if (var == null || v.contains("/lora_sum")) {
                continue;
            }
            for (String reader : var.getInputsForOp() == null ? List.<String>of() : var.getInputsForOp()) {
                if (!own.contains(reader)) {
                    throw new IllegalStateException("cannot take the DoRA adapter of '" + weight + "' out of the "
                            + "graph: op '" + reader + "' reads its variable '" + v + "', which would be removed "
                            + "(remove that op first); nothing was changed");
                }
            }
        }
    }
}
