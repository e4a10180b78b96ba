# bench/results.gp: the chart of bench/results.md's main rows.
# gnuplot -e "datafile='chart.dat'; outfile='results.png'" results.gp
# Each bar is a proxy's figure relative to going direct, oriented so that
# higher is better: throughput and upload are proxy/direct, latencies
# (scenario 2's p50, scenario 4's per-line p50) direct/proxy, the naive
# far call the speedup over naive direct.  Each is the median of per-run
# ratios.
set terminal pngcairo size 960,540 noenhanced font "sans,11"
set output outfile
set title "ollama-pool, nginx and HAProxy relative to direct (higher is better)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set yrange [0:*]
set ylabel "ratio to direct"
set key top left
set xtics nomirror
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lc rgb "#555555"
plot datafile using 2:xtic(1) title "ollama-pool" lc rgb "#1f77b4", \
     '' using 3 title "nginx" lc rgb "#2ca02c", \
     '' using 4 title "HAProxy" lc rgb "#d62728", \
     '' using ($0-0.27):2:(sprintf("%.2f", $2)) with labels offset 0,0.7 font ",8" notitle, \
     '' using 0:3:(sprintf("%.2f", $3)) with labels offset 0,0.7 font ",8" notitle, \
     '' using ($0+0.27):4:(sprintf("%.2f", $4)) with labels offset 0,0.7 font ",8" notitle
