set terminal pngcairo size 2400,712 font ',10'
set output '/tmp/report-pubsub/ratios.png'
set title 'cost relative to the baseline (log scale; 1 = the baseline, lower is better)'
set ylabel 'x baseline'
set datafile missing '-'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by -40 left nomirror
set grid ytics
set key top left
set bmargin 30
set rmargin 12
set logscale y
plot '/tmp/report-pubsub/plots/ratios.dat' using 2:xtic(1) title 'split', \
     '/tmp/report-pubsub/plots/ratios.dat' using 3:xtic(1) title 'shared', \
     1 with lines dashtype 2 lw 2 lc rgb 'black' title 'baseline = 1'
