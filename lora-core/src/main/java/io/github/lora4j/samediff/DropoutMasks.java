package io.github.lora4j.samediff;

import io.github.lora4j.DropoutStream;
import io.github.lora4j.LoraConfig;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.nd4j.autodiff.listeners.At;
import org.nd4j.autodiff.listeners.BaseListener;
import org.nd4j.autodiff.listeners.Operation;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.internal.SameDiffOp;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.ops.OpContext;
import org.nd4j.linalg.dataset.api.MultiDataSet;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Draws one adapter's LoRA dropout masks in SameDiff's training operation ({@code fit}, {@code calculateGradients}):
 * right after a mask op of the adapter ({@code onesLike(x)}, see {@link GraphSurgery#insertDropout}) ran, it overwrites
 * that op's output, in place, with {@code m/(1 − p)}, {@code m} drawn from lora-core's {@link DropoutStream} of the
 * adapter's configuration (the masks a {@code LoraLinear} of that configuration draws, in the input's row-major
 * order). The forward and the backward of the step read that same array. In every other operation ({@code output},
 * evaluation, validation) the mask stays all ones. The stream restarts when the listener is made (apply, load).
 */
final class DropoutMasks extends BaseListener {

    private final Set<String> maskOps = new HashSet<>();
    private DropoutStream stream;

    /**
     * @param paths  the adapter's dropout ops, one per adapted op
     * @param config the adapter's configuration (its seed and dropout)
     */
    DropoutMasks(List<GraphSurgery.DropoutPath> paths, LoraConfig config) {
        paths.forEach(d -> maskOps.add(d.mask()));
        this.stream = DropoutStream.of(config);
    }

    /** A new configuration (after a load): the stream restarts when the dropout changes. */
    void setConfig(LoraConfig config) {
        if (config.dropout() != stream.p()) {
            stream = DropoutStream.of(config);
        }
    }

    @Override
    public boolean isActive(Operation operation) {
        return operation == Operation.TRAINING;
    }

    @Override
    public void opExecution(SameDiff sd, At at, MultiDataSet batch, SameDiffOp op, OpContext opContext,
            INDArray[] outputs) {
        if (at.operation() != Operation.TRAINING || stream.p() == 0 || !maskOps.contains(op.getName())) {
            return;
        }
        INDArray mask = outputs[0];
        boolean[] kept = stream.next(mask.length());
        double q = stream.scale();
        double[] m = new double[kept.length];
        for (int i = 0; i < m.length; i++) {
            m[i] = kept[i] ? q : 0.0;
        }
        mask.assign(Nd4j.createFromArray(m).castTo(mask.dataType()).reshape('c', mask.shape()));   // m/(1 − p)
    }
}
